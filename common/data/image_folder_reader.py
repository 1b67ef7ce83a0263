"""Read a folder of PNG/JPEG images labelled by a CSV (columns file,label and optional split)."""

import csv
import logging
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from common.data.arrays import DatasetSplits, ImageArrays
from common.errors import DataFormatError

__all__ = ["read_image_folder"]

logger = logging.getLogger(__name__)

_SPLITS = ("train", "val", "test")


def _read_rows(csv_path: Path) -> list[dict[str, str]]:
    if not csv_path.is_file():
        raise DataFormatError(csv_path, "labels CSV not found (columns file,label[,split])")
    with csv_path.open(newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        columns = set(reader.fieldnames or [])
        missing = {"file", "label"} - columns
        if missing:
            raise DataFormatError(
                csv_path, f"missing column(s) {sorted(missing)}; found {sorted(columns)}"
            )
        rows = list(reader)
    if not rows:
        raise DataFormatError(csv_path, "no rows")
    return rows


def _load_image(path: Path, image_size: int) -> np.ndarray:
    with Image.open(path) as image:
        gray = image.convert("L").resize((image_size, image_size), Image.Resampling.BILINEAR)
        return np.asarray(gray, dtype=np.float32) / 255.0


def _stratified_split(
    labels: np.ndarray, val_fraction: float, test_fraction: float, seed: int
) -> np.ndarray:
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


def read_image_folder(
    root: Path,
    labels_csv: Path | None = None,
    image_size: int = 64,
    seed: int = 0,
    val_fraction: float = 0.1,
    test_fraction: float = 0.2,
) -> DatasetSplits:
    """Read every image listed in the CSV (default ``root/labels.csv``).

    Images become grayscale, ``image_size`` x ``image_size``, scaled to [0, 1]. String labels
    are class names (sorted alphabetically to indices); integer labels are used as they are.
    Without a ``split`` column a seeded stratified split is made. Every bad row (missing or
    undecodable file, empty label, unknown split) is collected and reported together.
    """
    root = Path(root)
    csv_path = Path(labels_csv) if labels_csv is not None else root / "labels.csv"
    rows = _read_rows(csv_path)
    problems: list[str] = []
    images: list[np.ndarray] = []
    raw_labels: list[str] = []
    splits: list[str] = []
    for line, row in enumerate(rows, start=2):  # line 1 is the header
        file_name, label = (row.get("file") or "").strip(), (row.get("label") or "").strip()
        split = (row.get("split") or "").strip().lower()
        if not label:
            problems.append(f"row {line}: empty label")
            continue
        if split and split not in _SPLITS:
            problems.append(f"row {line}: split {split!r} is not one of {list(_SPLITS)}")
            continue
        image_path = root / file_name
        try:
            images.append(_load_image(image_path, image_size))
        except FileNotFoundError:
            problems.append(f"row {line}: {image_path} not found")
            continue
        except (UnidentifiedImageError, OSError) as exc:
            problems.append(f"row {line}: {image_path} cannot be decoded ({exc})")
            continue
        raw_labels.append(label)
        splits.append(split)
    if problems:
        raise DataFormatError(csv_path, f"{len(problems)} bad row(s): " + "; ".join(problems))
    if all(raw.lstrip("-").isdigit() for raw in raw_labels):
        labels = np.array([int(raw) for raw in raw_labels], dtype=np.int64)
        if labels.min() < 0:
            raise DataFormatError(csv_path, f"negative label {labels.min()}")
        class_names = tuple(str(k) for k in range(labels.max() + 1))
    else:
        class_names = tuple(sorted(set(raw_labels)))
        labels = np.array([class_names.index(raw) for raw in raw_labels], dtype=np.int64)
    assignment = np.array(splits, dtype=object)
    if not any(splits):
        assignment = _stratified_split(labels, val_fraction, test_fraction, seed)
    elif not all(splits):
        raise DataFormatError(csv_path, "the split column must be filled on every row or none")
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
    logger.info("read %d images from %s", len(labels), root)
    return DatasetSplits(
        train=parts["train"],
        val=parts["val"],
        test=parts["test"],
        class_names=class_names,
        source=root,
    )
