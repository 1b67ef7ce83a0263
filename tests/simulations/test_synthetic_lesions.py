from pathlib import Path

import numpy as np

from common.data.npz_reader import read_npz
from simulations.synthetic_lesions import generate_synthetic_lesions, write_synthetic_lesions


def test_same_seed_same_images_other_seed_other_images() -> None:
    a = generate_synthetic_lesions(n_train=20, n_val=4, n_test=4, seed=1)
    b = generate_synthetic_lesions(n_train=20, n_val=4, n_test=4, seed=1)
    c = generate_synthetic_lesions(n_train=20, n_val=4, n_test=4, seed=2)
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert not np.array_equal(a["train_images"], c["train_images"])


def test_written_file_reads_back_with_balanced_labelled_classes(tmp_path: Path) -> None:
    splits = read_npz(write_synthetic_lesions(tmp_path / "sub" / "d.npz", n_train=200))
    assert splits.class_names == ("no-lesion", "lesion")
    assert np.bincount(splits.train.labels).tolist() == [100, 100]
    assert splits.image_size == (32, 32)


def test_lesion_images_have_a_brighter_spot() -> None:
    arrays = generate_synthetic_lesions(n_train=400, n_val=2, n_test=2, seed=0)
    images = arrays["train_images"].astype(float)
    labels = arrays["train_labels"].ravel()
    # brightest pixel above each image's median: lesions stand out from the background
    contrast = images.reshape(len(images), -1).max(1) - np.median(
        images.reshape(len(images), -1), 1
    )
    assert contrast[labels == 1].mean() > contrast[labels == 0].mean() + 10


def test_some_lesions_are_faint_so_the_task_is_not_trivial() -> None:
    arrays = generate_synthetic_lesions(n_train=400, n_val=2, n_test=2, seed=0)
    images = arrays["train_images"].astype(float).reshape(400, -1)
    labels = arrays["train_labels"].ravel()
    contrast = images.max(1) - np.median(images, 1)
    brightest_background = np.percentile(contrast[labels == 0], 95)
    faint = np.mean(contrast[labels == 1] < brightest_background)
    assert 0.02 < faint < 0.3  # a few lesions hide in the background's own variation


def test_requested_sizes_and_layout() -> None:
    arrays = generate_synthetic_lesions(n_train=10, n_val=4, n_test=6, image_size=24, seed=5)
    assert arrays["train_images"].shape == (10, 24, 24)
    assert arrays["train_images"].dtype == np.uint8
    assert arrays["val_labels"].shape == (4, 1)
    assert arrays["test_images"].shape == (6, 24, 24)
    assert arrays["class_names"].tolist() == ["no-lesion", "lesion"]
