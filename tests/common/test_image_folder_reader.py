from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from common.data.image_folder_reader import read_image_folder
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
    splits = read_image_folder(tmp_path, image_size=8, seed=1)
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


def test_the_stratified_split_is_seeded(tmp_path: Path) -> None:
    names = _write_images(tmp_path, 30)  # image i has grey level 10 * i: its mean identifies it
    rows = ["file,label"] + [f"{name},{'ab'[i % 2]}" for i, name in enumerate(names)]
    (tmp_path / "labels.csv").write_text("\n".join(rows) + "\n")

    def test_images(seed: int) -> np.ndarray:
        return read_image_folder(tmp_path, image_size=4, seed=seed).test.images.mean((1, 2, 3))

    assert np.array_equal(test_images(0), test_images(0))
    assert not np.array_equal(test_images(0), test_images(1))


def test_integer_labels_keep_their_values(tmp_path: Path) -> None:
    names = _write_images(tmp_path, 6)
    splits = ["train", "train", "train", "val", "test", "train"]
    rows = ["file,label,split"] + [
        f"{name},{[2, 0, 1, 2, 0, 1][i]},{splits[i]}" for i, name in enumerate(names)
    ]
    (tmp_path / "labels.csv").write_text("\n".join(rows) + "\n")
    result = read_image_folder(tmp_path, image_size=4)
    assert result.class_names == ("0", "1", "2")
    assert result.train.labels.tolist() == [2, 0, 1, 1]


def test_sixteen_bit_png_keeps_its_depth(tmp_path: Path) -> None:
    """16-bit X-ray PNGs are scaled by 65535, not clipped to 8 bits (all white)."""
    levels = [1000, 20000, 40000, 60000]
    for i, level in enumerate(levels):
        Image.fromarray(np.full((10, 10), level, dtype=np.uint16)).save(tmp_path / f"x{i}.png")
    rows = ["file,label,split", "x0.png,a,train", "x1.png,b,train", "x2.png,a,val", "x3.png,b,test"]
    (tmp_path / "labels.csv").write_text("\n".join(rows) + "\n")
    result = read_image_folder(tmp_path, image_size=6)
    assert result.train.images[:, 0, 0, 0] == pytest.approx([1000 / 65535, 20000 / 65535])
    assert result.test.images.mean() == pytest.approx(60000 / 65535, abs=1e-5)


def test_rows_are_named_by_their_csv_line_even_after_blank_lines(tmp_path: Path) -> None:
    names = _write_images(tmp_path, 3)
    lines = ["file,label,split", f"{names[0]},a,train", "", f"{names[1]},b,train", ",a,train"]
    lines += [f"{names[2]},,holdout"]
    (tmp_path / "labels.csv").write_text("\n".join(lines) + "\n")
    with pytest.raises(DataFormatError) as err:
        read_image_folder(tmp_path)
    message = str(err.value)
    assert "2 bad row(s)" in message
    assert "row 5: empty file name" in message
    assert "row 6: empty label, split 'holdout' is not one of ['train', 'val', 'test']" in message


def test_a_class_missing_from_train_is_named(tmp_path: Path) -> None:
    names = _write_images(tmp_path, 4)
    rows = ["file,label,split"] + [
        f"{names[0]},normal,train",
        f"{names[1]},normal,val",
        f"{names[2]},pneumonia,test",
        f"{names[3]},normal,test",
    ]
    (tmp_path / "labels.csv").write_text("\n".join(rows) + "\n")
    with pytest.raises(DataFormatError, match=r"labels.csv: class\(es\) \['pneumonia'\] have no"):
        read_image_folder(tmp_path)


def test_a_partly_filled_split_column_is_refused(tmp_path: Path) -> None:
    names = _write_images(tmp_path, 3)
    rows = ["file,label,split", f"{names[0]},a,train", f"{names[1]},b,", f"{names[2]},a,test"]
    (tmp_path / "labels.csv").write_text("\n".join(rows) + "\n")
    with pytest.raises(DataFormatError, match="every row or none; empty on row\\(s\\) 3"):
        read_image_folder(tmp_path)


def test_a_truncated_png_is_reported_not_half_read(tmp_path: Path) -> None:
    names = _write_images(tmp_path, 3)
    noisy = np.random.default_rng(0).integers(0, 256, (64, 64), dtype=np.uint8)
    Image.fromarray(noisy).save(tmp_path / "whole.png")
    (tmp_path / "cut.png").write_bytes((tmp_path / "whole.png").read_bytes()[:600])
    rows = ["file,label,split", f"{names[0]},a,train", f"{names[1]},b,train"]
    rows += [f"{names[2]},a,val", "cut.png,b,test"]
    (tmp_path / "labels.csv").write_text("\n".join(rows) + "\n")
    with pytest.raises(DataFormatError, match=r"row 5: \S+cut.png cannot be decoded"):
        read_image_folder(tmp_path)
