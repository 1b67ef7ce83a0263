"""Read a folder of PNG/JPEG images labelled by a CSV (columns file,label and optional split)."""

import csv
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from common.data.arrays import DatasetSplits, ImageArrays
from common.data.colour import apply_channel_rule
from common.data.picture_cases import read_picture_file
from common.errors import DataFormatError

__all__ = ["read_image_folder"]

logger = logging.getLogger(__name__)

_SPLITS = ("train", "val", "test")
# What Pillow raises for files it cannot decode (FileNotFoundError is reported on its own).
_DECODE_ERRORS = (
    UnidentifiedImageError,
    OSError,
    ValueError,
    SyntaxError,
    EOFError,
    Image.DecompressionBombError,
)


@dataclass(frozen=True)
class _Row:
    """One CSV record and the line it ends on (the header is line 1)."""

    line: int
    file: str
    label: str
    split: str


def _read_rows(csv_path: Path) -> list[_Row]:
    """The CSV's records; a missing file or missing columns raise DataFormatError."""
    if csv_path.is_dir():
        raise DataFormatError(csv_path, "is a folder, not a labels CSV")
    if not csv_path.is_file():
        raise DataFormatError(csv_path, "labels CSV not found (columns file,label[,split])")
    try:
        with csv_path.open(newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            columns = {name.strip() for name in reader.fieldnames or [] if name}
            missing = {"file", "label"} - columns
            if missing:
                raise DataFormatError(
                    csv_path, f"missing column(s) {sorted(missing)}; found {sorted(columns)}"
                )
            rows = []
            for record in reader:  # blank lines are skipped; line_num keeps the true line
                fields = {(k or "").strip(): (v or "").strip() for k, v in record.items()}
                rows.append(
                    _Row(
                        line=reader.line_num,
                        file=fields.get("file", ""),
                        label=fields.get("label", ""),
                        split=fields.get("split", "").lower(),
                    )
                )
    except (UnicodeDecodeError, csv.Error) as exc:
        raise DataFormatError(csv_path, f"not a readable UTF-8 CSV ({exc})") from None
    if not rows:
        raise DataFormatError(csv_path, "no rows after the header")
    return rows


def read_picture(path: Path) -> tuple[np.ndarray, bool]:
    """A picture's grey stored values (float32 [H, W]) and whether it is 16-bit.

    Grey is the colour rule of every format (common.data.colour): the mean of R, G and B.

    Raises:
        FileNotFoundError: The file does not exist.
        Exception: One of ``_DECODE_ERRORS`` when the file cannot be decoded or its pixel
            values do not fit its bit depth.
    """
    picture = read_picture_file(path)
    sixteen_bit = picture.full_scale is not None and picture.full_scale > 255
    return apply_channel_rule(picture.pixels, "grey")[0], sixteen_bit


def picture_in_unit_range(pixels: np.ndarray, sixteen_bit: bool, image_size: int) -> np.ndarray:
    """A picture as training sees it: ``image_size`` x ``image_size`` float32 in [0, 1].

    8-bit images are scaled by 255; 16-bit ones (common for X-rays) by 65535, so their
    full depth is kept instead of being clipped to 8 bits; resized with Pillow's bilinear filter.
    """
    size = (image_size, image_size)
    if sixteen_bit:
        scaled = Image.fromarray((pixels / 65535.0).astype(np.float32))  # mode "F"
        resized = scaled.resize(size, Image.Resampling.BILINEAR)
        return np.clip(np.asarray(resized, dtype=np.float32), 0.0, 1.0)
    gray = Image.fromarray(pixels.astype(np.uint8)).resize(size, Image.Resampling.BILINEAR)
    return np.asarray(gray, dtype=np.float32) / 255.0


def _load_image(path: Path, image_size: int) -> np.ndarray:
    """A grayscale ``image_size`` x ``image_size`` float32 image in [0, 1]."""
    return picture_in_unit_range(*read_picture(path), image_size)


def _stratified_split(
    labels: np.ndarray, val_fraction: float, test_fraction: float, seed: int
) -> np.ndarray:
    """Seeded per-class assignment of every sample to train, val or test."""
    rng = np.random.default_rng(seed)
    assignment = np.empty(len(labels), dtype=object)
    for cls in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == cls))
        n_test = int(round(len(members) * test_fraction))
        n_val = int(round(len(members) * val_fraction))
        assignment[members[:n_test]] = "test"
        assignment[members[n_test : n_test + n_val]] = "val"
        assignment[members[n_test + n_val :]] = "train"
    return assignment


def _labels_and_names(csv_path: Path, raw: list[str]) -> tuple[np.ndarray, tuple[str, ...]]:
    """Integer labels as they are, or class names sorted alphabetically to indices."""
    if all(value.lstrip("-").isdigit() for value in raw):
        labels = np.array([int(value) for value in raw], dtype=np.int64)
        if labels.min() < 0:
            raise DataFormatError(csv_path, f"negative label {labels.min()}")
        return labels, tuple(str(k) for k in range(int(labels.max()) + 1))
    names = tuple(sorted(set(raw)))
    index = {name: k for k, name in enumerate(names)}
    return np.array([index[value] for value in raw], dtype=np.int64), names


def read_image_folder(
    root: Path,
    labels_csv: Path | None = None,
    image_size: int = 64,
    seed: int = 0,
    val_fraction: float = 0.1,
    test_fraction: float = 0.2,
) -> DatasetSplits:
    """Read every image listed in a labels CSV.

    The CSV has a header with columns ``file`` (relative to ``root``) and ``label``, and
    optionally ``split`` (train, val or test, filled on every row or on none). String labels
    are class names, sorted alphabetically to indices; integer labels are used as they are.
    Without a ``split`` column a seeded split, stratified by class, is made.

    Args:
        root: The folder the ``file`` paths are relative to.
        labels_csv: The CSV; ``root/labels.csv`` by default.
        image_size: Images are resized (bilinear) to ``image_size`` x ``image_size``.
        seed: Seed of the stratified split.
        val_fraction: Share of each class put in val when there is no ``split`` column.
        test_fraction: Share of each class put in test when there is no ``split`` column.

    Returns:
        The splits, images grayscale float32 [N, 1, image_size, image_size] in [0, 1].

    Raises:
        DataFormatError: Naming the CSV: it is missing or lacks a column; or rows are bad
            (missing or undecodable file, empty label, unknown split), all of them listed
            together with their line numbers; or a split is empty or a class has no
            training images.
        ValueError: ``image_size`` or the fractions are out of range.
    """
    if image_size < 1:
        raise ValueError(f"image_size must be at least 1, got {image_size}")
    if val_fraction < 0 or test_fraction < 0 or val_fraction + test_fraction >= 1:
        raise ValueError(
            f"val_fraction {val_fraction} and test_fraction {test_fraction} must be "
            "non-negative and leave some data for training"
        )
    root = Path(root)
    csv_path = Path(labels_csv) if labels_csv is not None else root / "labels.csv"
    rows = _read_rows(csv_path)
    problems: list[str] = []
    images: list[np.ndarray] = []
    for row in rows:
        row_problems = []
        if not row.label:
            row_problems.append("empty label")
        if row.split and row.split not in _SPLITS:
            row_problems.append(f"split {row.split!r} is not one of {list(_SPLITS)}")
        if not row.file:
            row_problems.append("empty file name")
        else:
            image_path = root / row.file
            try:
                images.append(_load_image(image_path, image_size))
            except FileNotFoundError:
                row_problems.append(f"{image_path} not found")
            except _DECODE_ERRORS as exc:
                row_problems.append(f"{image_path} cannot be decoded ({exc})")
        if row_problems:
            problems.append(f"row {row.line}: " + ", ".join(row_problems))
    if problems:
        raise DataFormatError(csv_path, f"{len(problems)} bad row(s):\n  " + "\n  ".join(problems))
    labels, class_names = _labels_and_names(csv_path, [row.label for row in rows])
    splits = [row.split for row in rows]
    if not any(splits):
        assignment = _stratified_split(labels, val_fraction, test_fraction, seed)
    elif all(splits):
        assignment = np.array(splits, dtype=object)
    else:
        unsplit = [str(row.line) for row in rows if not row.split]
        raise DataFormatError(
            csv_path,
            "the split column must be filled on every row or none; empty on row(s) "
            + ", ".join(unsplit),
        )
    duplicates = len(rows) - len({row.file for row in rows})
    if duplicates:
        logger.warning("%s lists %d file(s) more than once", csv_path, duplicates)
    stacked = np.stack(images)[:, None]
    parts = {
        split: ImageArrays(stacked[assignment == split], labels[assignment == split])
        for split in _SPLITS
    }
    for split, part in parts.items():
        if len(part) == 0:
            raise DataFormatError(csv_path, f"the {split} split has no images")
    absent = [
        class_names[k] for k in range(len(class_names)) if not (parts["train"].labels == k).any()
    ]
    if absent:
        raise DataFormatError(csv_path, f"class(es) {absent} have no training images")
    logger.info(
        "read %d images of %d classes from %s: %s",
        len(labels),
        len(class_names),
        root,
        ", ".join(f"{s} {len(p)}" for s, p in parts.items()),
    )
    return DatasetSplits(
        train=parts["train"],
        val=parts["val"],
        test=parts["test"],
        class_names=class_names,
        source=root,
    )
