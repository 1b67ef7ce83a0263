from pathlib import Path

import numpy as np
import pytest

from common.data.npz_reader import read_npz
from common.errors import DataFormatError

PNEUMONIA = Path(__file__).parents[3] / "shared" / "data" / "pneumoniamnist.npz"


def _valid_arrays() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    arrays = {}
    for split, n in (("train", 20), ("val", 6), ("test", 8)):
        arrays[f"{split}_images"] = rng.integers(0, 256, (n, 12, 12), dtype=np.uint8)
        arrays[f"{split}_labels"] = (np.arange(n) % 3).reshape(-1, 1).astype(np.uint8)
    return arrays


@pytest.mark.skipif(not PNEUMONIA.exists(), reason="shared PneumoniaMNIST not present")
def test_reads_real_pneumoniamnist_with_its_official_split() -> None:
    splits = read_npz(PNEUMONIA)
    assert (len(splits.train), len(splits.val), len(splits.test)) == (4708, 524, 624)
    assert splits.train.images.shape == (4708, 1, 28, 28)
    assert splits.train.images.dtype == np.float32
    assert splits.train.images.min() >= 0.0 and splits.train.images.max() <= 1.0
    assert np.bincount(splits.train.labels).tolist() == [1214, 3494]
    assert np.bincount(splits.test.labels).tolist() == [234, 390]
    assert splits.num_classes == 2


def test_grayscale_and_colour_layouts(tmp_path: Path) -> None:
    arrays = _valid_arrays()
    path = tmp_path / "gray.npz"
    np.savez(path, **arrays)
    splits = read_npz(path)
    assert splits.train.images.shape == (20, 1, 12, 12)
    assert splits.class_names == ("0", "1", "2")
    assert splits.train.images[0, 0, 0, 0] == pytest.approx(arrays["train_images"][0, 0, 0] / 255)

    colour = {
        k: (np.repeat(v[..., None], 3, -1) if "images" in k else v) for k, v in arrays.items()
    }
    np.savez(tmp_path / "rgb.npz", **colour)
    assert read_npz(tmp_path / "rgb.npz").train.images.shape == (20, 3, 12, 12)


def _expect_error(tmp_path: Path, arrays: dict[str, np.ndarray], fragment: str) -> None:
    path = tmp_path / "bad.npz"
    np.savez(path, **arrays)
    with pytest.raises(DataFormatError) as err:
        read_npz(path)
    assert str(path) in str(err.value) and fragment in str(err.value)


def test_missing_key_is_named(tmp_path: Path) -> None:
    arrays = _valid_arrays()
    del arrays["val_labels"]
    _expect_error(tmp_path, arrays, "missing key(s) ['val_labels']")


def test_count_mismatch_is_named(tmp_path: Path) -> None:
    arrays = _valid_arrays()
    arrays["test_labels"] = arrays["test_labels"][:5]
    _expect_error(tmp_path, arrays, "test: 8 images but 5 labels")


def test_float_labels_and_shape_differences_are_rejected(tmp_path: Path) -> None:
    arrays = _valid_arrays()
    arrays["train_labels"] = arrays["train_labels"].astype(np.float32)
    _expect_error(tmp_path, arrays, "train_labels must be integers")
    arrays = _valid_arrays()
    arrays["val_images"] = np.zeros((6, 10, 10), dtype=np.uint8)
    _expect_error(tmp_path, arrays, "different image shapes")


def test_not_an_npz_file(tmp_path: Path) -> None:
    path = tmp_path / "notes.npz"
    path.write_text("this is not an archive")
    with pytest.raises(DataFormatError, match="notes.npz: not a readable .npz archive"):
        read_npz(path)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(DataFormatError, match="absent.npz: file not found"):
        read_npz(tmp_path / "absent.npz")


def test_class_names_array_is_used(tmp_path: Path) -> None:
    arrays = _valid_arrays()
    arrays["class_names"] = np.array(["benign", "malignant", "normal"])
    np.savez(tmp_path / "named.npz", **arrays)
    assert read_npz(tmp_path / "named.npz").class_names == ("benign", "malignant", "normal")


def test_an_empty_train_split_is_named_an_empty_validation_split_is_allowed(
    tmp_path: Path,
) -> None:
    arrays = _valid_arrays()
    arrays["val_images"] = arrays["val_images"][:0]
    arrays["val_labels"] = arrays["val_labels"][:0]
    np.savez(tmp_path / "no-val.npz", **arrays)
    assert len(read_npz(tmp_path / "no-val.npz").val) == 0  # a small simulated site
    arrays["train_images"] = arrays["train_images"][:0]
    arrays["train_labels"] = arrays["train_labels"][:0]
    _expect_error(tmp_path, arrays, "train split is empty")


def test_negative_labels_and_wrong_shapes_are_named(tmp_path: Path) -> None:
    arrays = _valid_arrays()
    arrays["test_labels"] = arrays["test_labels"].astype(np.int16) - 1
    _expect_error(tmp_path, arrays, "test_labels has a negative label -1")
    arrays = _valid_arrays()
    arrays["train_labels"] = np.zeros((20, 2), dtype=np.int64)  # one-hot, not supported
    _expect_error(tmp_path, arrays, "train_labels must be [N] or [N, 1], got shape (20, 2)")
    arrays = _valid_arrays()
    arrays["train_images"] = arrays["train_images"].reshape(20, 144)
    _expect_error(tmp_path, arrays, "train_images must be [N, H, W] or [N, H, W, C]")
    arrays = _valid_arrays()
    arrays["train_images"] = arrays["train_images"].astype(np.uint16) * 200
    _expect_error(tmp_path, arrays, "train_images must be uint8 or floats in [0, 1], got uint16")


def test_pickled_arrays_are_refused_not_loaded(tmp_path: Path) -> None:
    arrays = _valid_arrays()
    arrays["val_labels"] = arrays["val_labels"].astype(object)
    _expect_error(tmp_path, arrays, "val_labels cannot be read")


def test_a_single_npy_array_named_npz(tmp_path: Path) -> None:
    path = tmp_path / "single.npz"
    with path.open("wb") as handle:
        np.save(handle, np.zeros((4, 28, 28), dtype=np.uint8))
    with pytest.raises(DataFormatError, match="single.npz: not a readable .npz archive"):
        read_npz(path)


def test_a_damaged_archive_member_is_named(tmp_path: Path) -> None:
    path = tmp_path / "damaged.npz"
    np.savez(path, **_valid_arrays())
    data = bytearray(path.read_bytes())
    start = data.index(b"train_images.npy") + 200  # inside the member's stored bytes
    data[start : start + 50] = bytes(50)
    path.write_bytes(bytes(data))
    with pytest.raises(DataFormatError, match="damaged.npz: train_images cannot be read"):
        read_npz(path)


def test_written_patients_are_read_back_so_a_simulated_site_keeps_them(tmp_path: Path) -> None:
    from common.data.arrays import ImageArrays
    from common.data.npz_writer import write_npz

    def part(patients: list[int]) -> ImageArrays:
        n = len(patients)
        return ImageArrays(
            images=np.zeros((n, 1, 4, 4), np.float32),
            labels=np.arange(n, dtype=np.int64) % 2,
            patients=np.array(patients, dtype=np.int64),
        )

    path = write_npz(
        tmp_path / "site.npz",
        # ids are per split in memory (joined caches number each split on its own): 3 twice
        {"train": part([7, 7, 3, 3, 3]), "val": part([3]), "test": part([])},
        ("a", "b"),
    )
    read = read_npz(path)
    assert read.train.num_patients == 2 and read.val.num_patients == 1
    assert read.train.patients is not None
    assert read.train.patients[0] == read.train.patients[1] != read.train.patients[2]
    without = write_npz(
        tmp_path / "plain.npz",
        {"train": ImageArrays(images=np.zeros((2, 1, 4, 4), np.float32), labels=np.array([0, 1]))},
        ("a", "b"),
    )
    assert "train_patients" not in np.load(without).files
