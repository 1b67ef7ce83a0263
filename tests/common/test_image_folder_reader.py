from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from common.data.image_folder_reader import read_image_folder
from common.data.loading import load_dataset
from common.errors import DataFormatError


def _write_images(root: Path, count: int, fmt: str = "png") -> list[str]:
    root.mkdir(parents=True, exist_ok=True)
    names = []
    for i in range(count):
        pixels = np.full((20, 30, 3), (i * 10) % 256, dtype=np.uint8)
        name = f"img_{i}.{fmt}"
        Image.fromarray(pixels).save(root / name)
        names.append(name)
    return names


def test_split_column_is_honoured_and_images_resized_to_grayscale(tmp_path: Path) -> None:
    names = _write_images(tmp_path, 6)
    split_of = ["train", "train", "train", "train", "val", "test"]
    rows = ["file,label,split"]
    for i, name in enumerate(names):
        rows.append(f"{name},{'pneumonia' if i % 2 else 'normal'},{split_of[i]}")
    (tmp_path / "labels.csv").write_text("\n".join(rows) + "\n")
    splits = read_image_folder(tmp_path, image_size=16)
    assert (len(splits.train), len(splits.val), len(splits.test)) == (4, 1, 1)
    assert splits.class_names == ("normal", "pneumonia")
    assert splits.train.images.shape == (4, 1, 16, 16)
    assert splits.train.labels.tolist() == [0, 1, 0, 1]
    assert splits.train.images[1].mean() == pytest.approx(10 / 255, abs=1e-3)


def test_stratified_split_without_split_column(tmp_path: Path) -> None:
    names = _write_images(tmp_path, 40, fmt="jpg")
    rows = ["file,label"] + [f"{name},{i % 2}" for i, name in enumerate(names)]
    (tmp_path / "labels.csv").write_text("\n".join(rows) + "\n")
    splits = load_dataset(tmp_path, image_size=8, seed=1)
    assert len(splits.train) + len(splits.val) + len(splits.test) == 40
    assert (len(splits.val), len(splits.test)) == (4, 8)
    for part in (splits.train, splits.val, splits.test):
        assert np.bincount(part.labels).tolist()[0] == np.bincount(part.labels).tolist()[1]


def test_every_bad_row_is_reported_together(tmp_path: Path) -> None:
    names = _write_images(tmp_path, 4)
    (tmp_path / "broken.png").write_bytes(b"\x89PNG not really")
    rows = (
        ["file,label"]
        + [f"{n},0" for n in names]
        + ["missing.png,1", "broken.png,1", f"{names[0]},"]
    )
    (tmp_path / "labels.csv").write_text("\n".join(rows) + "\n")
    with pytest.raises(DataFormatError) as err:
        read_image_folder(tmp_path)
    message = str(err.value)
    assert "labels.csv: 3 bad row(s)" in message
    assert "row 6:" in message and "missing.png not found" in message
    assert "row 7:" in message and "broken.png cannot be decoded" in message
    assert "row 8: empty label" in message


def test_missing_column_and_missing_csv(tmp_path: Path) -> None:
    (tmp_path / "labels.csv").write_text("path,diagnosis\na.png,0\n")
    with pytest.raises(DataFormatError, match=r"missing column\(s\) \['file', 'label'\]"):
        read_image_folder(tmp_path)
    with pytest.raises(DataFormatError, match="other.csv: labels CSV not found"):
        read_image_folder(tmp_path, labels_csv=tmp_path / "other.csv")


def test_unsupported_path_is_explained(tmp_path: Path) -> None:
    (tmp_path / "scan.nii").write_text("x")
    with pytest.raises(DataFormatError, match="not a supported dataset"):
        load_dataset(tmp_path / "scan.nii")
    with pytest.raises(DataFormatError, match="no such file or folder"):
        load_dataset(tmp_path / "nothing")
