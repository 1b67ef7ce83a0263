"""Read MedMNIST v2-style .npz files (train/val/test images and labels)."""

import logging
import zipfile
from dataclasses import replace
from pathlib import Path

import numpy as np

from common.data.arrays import DatasetSplits, ImageArrays, unnamed_segments
from common.errors import DataFormatError

__all__ = ["SPATIAL_DIMS_KEY", "SPLITS", "read_npz"]

logger = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")

#: Key of a 0-d array holding 3 in an archive of volumes ([N, X, Y, Z] images, grayscale).
SPATIAL_DIMS_KEY = "spatial_dims"

_REQUIRED_KEYS = tuple(f"{split}_{kind}" for split in SPLITS for kind in ("images", "labels"))


def _member(path: Path, archive: np.lib.npyio.NpzFile, key: str) -> np.ndarray:
    """One array of the archive; a damaged or pickled member becomes a DataFormatError."""
    try:
        return np.asarray(archive[key])
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise DataFormatError(path, f"{key} cannot be read ({exc})") from None


def _to_images(path: Path, split: str, raw: np.ndarray, dims: int = 2) -> np.ndarray:
    """Images [N, H, W] or [N, H, W, C], uint8 or floats in [0, 1], as float32 [N, C, H, W].

    With ``dims`` 3: grayscale volumes [N, X, Y, Z] as [N, 1, X, Y, Z].
    """
    key = f"{split}_images"
    if dims == 3:
        if raw.ndim != 4:
            raise DataFormatError(path, f"{key} must be volumes [N, X, Y, Z], got {raw.shape}")
        raw = raw[:, None]
    elif raw.ndim == 3:  # [N, H, W] grayscale
        raw = raw[:, None]
    elif raw.ndim == 4:  # [N, H, W, C]
        raw = raw.transpose(0, 3, 1, 2)
    else:
        raise DataFormatError(
            path, f"{key} must be [N, H, W] or [N, H, W, C], got shape {raw.shape}"
        )
    if raw.dtype == np.uint8:
        return raw.astype(np.float32) / 255.0
    if not np.issubdtype(raw.dtype, np.floating):
        raise DataFormatError(path, f"{key} must be uint8 or floats in [0, 1], got {raw.dtype}")
    images = raw.astype(np.float32)
    if images.size and not (np.isfinite(images).all() and images.min() >= 0 and images.max() <= 1):
        raise DataFormatError(
            path, f"{key} are floats but not all finite and in [0, 1]; store uint8 or rescale"
        )
    return images


def _to_labels(path: Path, split: str, raw: np.ndarray) -> np.ndarray:
    """Labels [N] or [N, 1] of non-negative integers as int64 [N]."""
    key = f"{split}_labels"
    if raw.ndim not in (1, 2) or (raw.ndim == 2 and raw.shape[1] != 1):
        raise DataFormatError(path, f"{key} must be [N] or [N, 1], got shape {raw.shape}")
    labels = raw.reshape(-1)
    if not np.issubdtype(labels.dtype, np.integer):
        raise DataFormatError(path, f"{key} must be integers, got {labels.dtype}")
    if labels.size and labels.min() < 0:
        raise DataFormatError(path, f"{key} has a negative label {labels.min()}")
    return labels.astype(np.int64)


def _to_masks(path: Path, split: str, raw: np.ndarray, images: np.ndarray) -> np.ndarray:
    """Masks [N, H, W] (or [N, X, Y, Z]) of class indices (one per image pixel) as uint8."""
    key = f"{split}_masks"
    expected = (images.shape[0], *images.shape[2:])
    if raw.shape != expected:
        raise DataFormatError(path, f"{key} must be {expected} (one per pixel), got {raw.shape}")
    if not np.issubdtype(raw.dtype, np.integer) or (
        raw.size and (raw.min() < 0 or raw.max() > 255)
    ):
        raise DataFormatError(path, f"{key} must hold integer class indices 0-255, got {raw.dtype}")
    return raw.astype(np.uint8)


def _spatial_dims(path: Path, archive: np.lib.npyio.NpzFile) -> int:
    """2, or 3 for an archive of volumes (``spatial_dims`` = 3)."""
    if SPATIAL_DIMS_KEY not in archive.files:
        return 2
    raw = _member(path, archive, SPATIAL_DIMS_KEY)
    if raw.shape != () or raw.dtype.kind not in "iu" or int(raw) not in (2, 3):
        raise DataFormatError(path, f"{SPATIAL_DIMS_KEY} must be the integer 2 or 3, got {raw}")
    return int(raw)


def _to_affines(path: Path, split: str, raw: np.ndarray, count: int) -> np.ndarray:
    """One finite, invertible 4 x 4 affine per volume, float64 [N, 4, 4]."""
    key = f"{split}_affines"
    if raw.shape != (count, 4, 4) or raw.dtype.kind != "f" or not np.isfinite(raw).all():
        raise DataFormatError(path, f"{key} must be {count} finite 4 x 4 affines, got {raw.shape}")
    affines = raw.astype(np.float64)
    if count and np.any(np.abs(np.linalg.det(affines[:, :3, :3])) < 1e-9):
        raise DataFormatError(path, f"{key} holds a singular affine (zero voxel size)")
    return affines


def _patient_ids(
    path: Path, archive: np.lib.npyio.NpzFile, sizes: dict[str, int]
) -> dict[str, np.ndarray] | None:
    """``{split}_patients`` (a pseudonym string per image) as int ids shared by the splits.

    None when the archive has no patient keys. A patient found in two splits is refused: its
    images would be trained on and tested on at once.
    """
    present = [f"{split}_patients" in archive.files for split in SPLITS]
    if not any(present):
        return None
    if not all(present):
        raise DataFormatError(path, "patients must be given for all of train, val and test")
    keys: dict[str, np.ndarray] = {}
    for split in SPLITS:
        raw = _member(path, archive, f"{split}_patients")
        if raw.shape != (sizes[split],) or raw.dtype.kind not in "UO":
            raise DataFormatError(
                path,
                f"{split}_patients must hold one pseudonym string per image ({sizes[split]}), "
                f"got {raw.dtype} {raw.shape}",
            )
        keys[split] = raw.astype(str)
    for i, first in enumerate(SPLITS):
        for second in SPLITS[i + 1 :]:
            shared = np.intersect1d(keys[first], keys[second])
            if shared.size:
                raise DataFormatError(
                    path, f"{shared.size} patient(s) have images in both {first} and {second}"
                )
    _, ids = np.unique(np.concatenate([keys[s] for s in SPLITS]), return_inverse=True)
    bounds = np.cumsum([sizes[s] for s in SPLITS])[:-1]
    return dict(zip(SPLITS, (part.astype(np.int64) for part in np.split(ids, bounds)), strict=True))


def _segment_names(
    path: Path, archive: np.lib.npyio.NpzFile, masks: list[np.ndarray]
) -> tuple[str, ...] | None:
    """The archive's ``segment_names`` (mask classes, background first), checked against masks."""
    if not masks:
        if "segment_names" in archive.files:
            raise DataFormatError(path, "segment_names without {train,val,test}_masks")
        return None
    highest = max((int(m.max()) for m in masks if m.size), default=0)
    names = (
        tuple(str(n) for n in _member(path, archive, "segment_names"))
        if "segment_names" in archive.files
        else unnamed_segments(highest + 1)
    )
    if highest >= len(names) or len(names) < 2:
        raise DataFormatError(
            path, f"masks hold class {highest} but segment_names has only {list(names)}"
        )
    return names


def _class_names(path: Path, raw: np.ndarray | None, num_classes: int) -> tuple[str, ...]:
    """The archive's ``class_names``, or "0".."K-1" when it has none."""
    if raw is None:
        return tuple(str(k) for k in range(num_classes))
    if raw.ndim != 1:
        raise DataFormatError(path, f"class_names must be a 1-D array, got shape {raw.shape}")
    names = tuple(str(name) for name in raw)
    if len(names) < num_classes:
        raise DataFormatError(
            path, f"{len(names)} class_names but labels go up to {num_classes - 1}"
        )
    if len(set(names)) != len(names):
        raise DataFormatError(path, f"class_names has duplicates: {list(names)}")
    return names


def read_npz(path: Path) -> DatasetSplits:
    """Read a MedMNIST v2-style archive with its official train/val/test split.

    The archive holds ``{train,val,test}_images`` (uint8 [N, H, W] grayscale or [N, H, W, C]
    colour) and ``{train,val,test}_labels`` ([N] or [N, 1] integers), and optionally
    ``class_names``; without it the classes are named "0".."K-1". Segmentation data adds
    ``{train,val,test}_masks`` (integer class per pixel [N, H, W]) and ``segment_names``.
    A site cache adds ``{train,val,test}_patients``: a keyed patient pseudonym per image, read
    as integer patient ids (``ImageArrays.patients``); without them the data has no patients.

    Args:
        path: The .npz file.

    Returns:
        The splits, images float32 [N, C, H, W] scaled to [0, 1] and labels int64 [N].

    Raises:
        DataFormatError: The file is missing, not an .npz archive, lacks a key, or holds
            arrays of the wrong shape, type or count; the message names the file and the
            problem.
    """
    path = Path(path)
    if path.is_dir():
        raise DataFormatError(path, "is a folder, not an .npz file")
    if not path.is_file():
        raise DataFormatError(path, "file not found")
    try:
        archive = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise DataFormatError(path, f"not a readable .npz archive ({exc})") from None
    if not isinstance(archive, np.lib.npyio.NpzFile):  # a single .npy array
        raise DataFormatError(
            path, "not a readable .npz archive (it holds a single array, as a .npy file does)"
        )
    with archive:
        missing = [key for key in _REQUIRED_KEYS if key not in archive.files]
        if missing:
            raise DataFormatError(
                path,
                f"missing key(s) {missing}; a MedMNIST-style .npz needs {list(_REQUIRED_KEYS)}",
            )
        with_masks = [f"{split}_masks" in archive.files for split in SPLITS]
        if any(with_masks) and not all(with_masks):
            raise DataFormatError(path, "masks must be given for all of train, val and test")
        dims = _spatial_dims(path, archive)
        if dims == 3 and not all(with_masks):
            raise DataFormatError(path, "volumes need {train,val,test}_masks")
        parts: dict[str, ImageArrays] = {}
        for split in SPLITS:
            images = _to_images(path, split, _member(path, archive, f"{split}_images"), dims)
            labels = _to_labels(path, split, _member(path, archive, f"{split}_labels"))
            if len(images) != len(labels):
                raise DataFormatError(
                    path, f"{split}: {len(images)} images but {len(labels)} labels"
                )
            if len(images) == 0 and split == "train":
                raise DataFormatError(path, "train split is empty")
            masks = (
                _to_masks(path, split, _member(path, archive, f"{split}_masks"), images)
                if all(with_masks)
                else None
            )
            affines = None
            if f"{split}_affines" in archive.files:
                raw_affines = _member(path, archive, f"{split}_affines")
                affines = _to_affines(path, split, raw_affines, len(images))
            parts[split] = ImageArrays(images=images, labels=labels, masks=masks, affines=affines)
        patients = _patient_ids(path, archive, {s: len(a) for s, a in parts.items()})
        if patients is not None:
            parts = {s: replace(a, patients=patients[s]) for s, a in parts.items()}
        segment_names = _segment_names(
            path, archive, [p.masks for p in parts.values() if p.masks is not None]
        )
        raw_names = (
            _member(path, archive, "class_names") if "class_names" in archive.files else None
        )
    shapes = {split: arrays.images.shape[1:] for split, arrays in parts.items()}
    if len(set(shapes.values())) != 1:
        raise DataFormatError(path, f"splits have different image shapes {shapes}")
    num_classes = 1 + max(int(arrays.labels.max()) for arrays in parts.values() if len(arrays))
    class_names = _class_names(path, raw_names, num_classes)
    logger.info("read %s: %s", path, ", ".join(f"{s} {len(a)}" for s, a in parts.items()))
    return DatasetSplits(
        train=parts["train"],
        val=parts["val"],
        test=parts["test"],
        class_names=class_names,
        source=path,
        segment_names=segment_names,
    )
