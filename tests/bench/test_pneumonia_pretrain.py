"""bench/pneumonia_pretrain.py: medfed-sim pretrain's weights; augmentations that keep pixels."""

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from common.checkpoint import save_checkpoint
from common.data.arrays import ImageArrays
from common.data.npz_writer import write_npz
from common.federation_job import FederationJob
from common.initial_weights import initial_state
from simulations.pretraining import pretrain

BENCH = Path(__file__).resolve().parents[2] / "bench"
sys.path.insert(0, str(BENCH))

from pneumonia_augmentation import SHIFT, augment  # noqa: E402
from pneumonia_pretrain import pretrain_augmented  # noqa: E402


def _public(tmp_path: Path) -> Path:
    rng = np.random.default_rng(0)
    empty = ImageArrays(images=np.zeros((0, 1, 28, 28), np.float32), labels=np.zeros(0, np.int64))
    train = ImageArrays(
        images=rng.random((24, 1, 28, 28), dtype=np.float32), labels=np.arange(24) % 2
    )
    splits = {"train": train, "val": empty, "test": empty}
    return write_npz(tmp_path / "public.npz", splits, ("normal", "pneumonia"))


def test_without_augmentation_it_trains_medfed_sim_pretrains_weights(tmp_path: Path) -> None:
    data = _public(tmp_path)
    job, ours, _ = pretrain_augmented(data, "none", epochs=2)
    reference = pretrain(FederationJob.model_validate({"model": {"name": "cnn"}}), data, 2)
    assert ours.keys() == reference.state_dict.keys()
    for key in ours:
        torch.testing.assert_close(ours[key], reference.state_dict[key])
    out = save_checkpoint(tmp_path / "public.pt", ours, job, 0, {})
    loading = {"model": {"name": "cnn", "initial_weights": str(out)}, "image_size": 28}
    loaded = initial_state(FederationJob.model_validate(loading))  # refuses another network
    assert loaded is not None and loaded.keys() == ours.keys()


def test_shift_augmentation_trains_other_weights(tmp_path: Path) -> None:
    data = _public(tmp_path)
    _, plain, _ = pretrain_augmented(data, "none", epochs=1)
    _, shifted, _ = pretrain_augmented(data, "shift", epochs=1)
    assert any(not torch.equal(plain[key], shifted[key]) for key in plain)


def test_shift_is_a_crop_of_the_reflect_padded_image() -> None:
    torch.manual_seed(0)
    images = torch.rand(16, 1, 28, 28)
    shifted = augment(images, "shift")
    padded = torch.nn.functional.pad(images, (SHIFT,) * 4, mode="reflect")
    moved = 0
    for original, padded_image, result in zip(images, padded, shifted, strict=True):
        offsets = [
            (dy, dx)
            for dy in range(2 * SHIFT + 1)
            for dx in range(2 * SHIFT + 1)
            if torch.equal(padded_image[:, dy : dy + 28, dx : dx + 28], result)
        ]
        assert offsets, "a shifted image is no crop of the padded original"
        moved += not torch.equal(original, result)
    assert moved > 8  # 24 of 25 offsets move the image


def test_flip_mirrors_some_images_and_keeps_the_others() -> None:
    torch.manual_seed(0)
    images = torch.rand(32, 1, 28, 28)
    flipped = augment(images, "flip")
    mirrored = [torch.equal(f, i.flip(2)) for f, i in zip(flipped, images, strict=True)]
    kept = [torch.equal(f, i) for f, i in zip(flipped, images, strict=True)]
    assert all(m != k for m, k in zip(mirrored, kept, strict=True))
    assert 4 < sum(mirrored) < 28


def test_an_unknown_augmentation_is_named() -> None:
    with pytest.raises(ValueError, match="'rotate'"):
        augment(torch.zeros(1, 1, 28, 28), "rotate")
