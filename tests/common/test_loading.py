from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from common.data.loading import load_dataset
from common.errors import DataFormatError


def _write_npz(path: Path) -> Path:
    rng = np.random.default_rng(0)
    arrays = {}
    for split, n in (("train", 10), ("val", 4), ("test", 4)):
        arrays[f"{split}_images"] = rng.integers(0, 256, (n, 8, 8), dtype=np.uint8)
        arrays[f"{split}_labels"] = (np.arange(n) % 2).reshape(-1, 1)
    with path.open("wb") as handle:  # np.savez(path) would append .npz to DATA.NPZ
        np.savez(handle, **arrays)
    return path


def test_an_npz_file_is_read_as_medmnist(tmp_path: Path) -> None:
    for name in ("data.npz", "DATA.NPZ"):
        splits = load_dataset(_write_npz(tmp_path / name))
        assert (len(splits.train), len(splits.val), len(splits.test)) == (10, 4, 4)
        assert splits.image_size == (8, 8)


def test_a_folder_with_labels_csv_is_read_as_images_at_the_asked_size(tmp_path: Path) -> None:
    rows = ["file,label"]
    for i in range(20):
        Image.fromarray(np.full((12, 12), i * 12, dtype=np.uint8)).save(tmp_path / f"{i}.png")
        rows.append(f"{i}.png,{'yes' if i % 2 else 'no'}")
    (tmp_path / "labels.csv").write_text("\n".join(rows) + "\n")
    splits = load_dataset(tmp_path, image_size=6, seed=3)
    assert splits.class_names == ("no", "yes")
    assert splits.image_size == (6, 6)
    assert len(splits.train) + len(splits.val) + len(splits.test) == 20
    assert splits.source == tmp_path


def test_unsupported_paths_are_explained(tmp_path: Path) -> None:
    (tmp_path / "scan.nii").write_text("x")
    with pytest.raises(DataFormatError, match="scan.nii: not a supported dataset: give a Med"):
        load_dataset(tmp_path / "scan.nii")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataFormatError, match="empty: not a supported dataset"):
        load_dataset(tmp_path / "empty")
    with pytest.raises(DataFormatError, match="nothing: no such file or folder"):
        load_dataset(tmp_path / "nothing")


def test_reader_errors_come_through_naming_the_file(tmp_path: Path) -> None:
    (tmp_path / "fake.npz").write_text("not an archive")
    with pytest.raises(DataFormatError, match="fake.npz: not a readable .npz archive"):
        load_dataset(tmp_path / "fake.npz")
