"""Read MedMNIST v2-style .npz files (train/val/test images and labels)."""

import logging
import zipfile
from pathlib import Path

import numpy as np

from common.data.arrays import DatasetSplits, ImageArrays
from common.errors import DataFormatError

__all__ = ["SPLITS", "read_npz"]

logger = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")


def _to_images(path: Path, split: str, raw: np.ndarray) -> np.ndarray:
    if raw.ndim == 3:  # [N, H, W] grayscale
        raw = raw[:, None]
    elif raw.ndim == 4:  # [N, H, W, C]
        raw = raw.transpose(0, 3, 1, 2)
    else:
        raise DataFormatError(
            path, f"{split}_images must be [N, H, W] or [N, H, W, C], got shape {raw.shape}"
        )
    if raw.dtype == np.uint8:
        return raw.astype(np.float32) / 255.0
    images = raw.astype(np.float32)
    if images.size and (images.min() < 0 or images.max() > 1):
        raise DataFormatError(path, f"{split}_images must be uint8 or floats in [0, 1]")
    return images


def _to_labels(path: Path, split: str, raw: np.ndarray) -> np.ndarray:
    labels = raw.reshape(raw.shape[0], -1) if raw.ndim > 1 else raw
    if labels.ndim != 1 and labels.shape[1] != 1:
        raise DataFormatError(path, f"{split}_labels must be [N] or [N, 1], got shape {raw.shape}")
    labels = labels.reshape(-1)
    if not np.issubdtype(labels.dtype, np.integer):
        raise DataFormatError(path, f"{split}_labels must be integers, got {labels.dtype}")
    if labels.size and labels.min() < 0:
        raise DataFormatError(path, f"{split}_labels has a negative label {labels.min()}")
    return labels.astype(np.int64)


def read_npz(path: Path) -> DatasetSplits:
    """Read ``path``; every problem raises a DataFormatError naming the file and what is wrong."""
    path = Path(path)
    if not path.is_file():
        raise DataFormatError(path, "file not found")
    try:
        archive = np.load(path, allow_pickle=False)
    except (OSError, ValueError, zipfile.BadZipFile) as exc:
        raise DataFormatError(path, f"not a readable .npz archive ({exc})") from None
    with archive:
        expected = [f"{s}_{kind}" for s in SPLITS for kind in ("images", "labels")]
        missing = [key for key in expected if key not in archive.files]
        if missing:
            raise DataFormatError(
                path, f"missing key(s) {missing}; a MedMNIST-style .npz needs {expected}"
            )
        parts: dict[str, ImageArrays] = {}
        for split in SPLITS:
            images = _to_images(path, split, archive[f"{split}_images"])
            labels = _to_labels(path, split, archive[f"{split}_labels"])
            if len(images) != len(labels):
                raise DataFormatError(
                    path, f"{split}: {len(images)} images but {len(labels)} labels"
                )
            if len(images) == 0:
                raise DataFormatError(path, f"{split} split is empty")
            parts[split] = ImageArrays(images=images, labels=labels)
        class_names = (
            tuple(str(n) for n in archive["class_names"])
            if "class_names" in archive.files
            else None
        )
    shapes = {split: arrays.images.shape[1:] for split, arrays in parts.items()}
    if len(set(shapes.values())) != 1:
        raise DataFormatError(path, f"splits have different image shapes {shapes}")
    num_classes = 1 + max(int(arrays.labels.max()) for arrays in parts.values())
    if class_names is None:
        class_names = tuple(str(k) for k in range(num_classes))
    elif len(class_names) < num_classes:
        raise DataFormatError(
            path, f"{len(class_names)} class_names but labels go up to {num_classes - 1}"
        )
    logger.info("read %s: %s", path, ", ".join(f"{s} {len(a)}" for s, a in parts.items()))
    return DatasetSplits(
        train=parts["train"],
        val=parts["val"],
        test=parts["test"],
        class_names=class_names,
        source=path,
    )
