"""Write splits back to the MedMNIST-style .npz that common.data.npz_reader reads."""

from pathlib import Path

import numpy as np

from common.atomic_file import replaced_atomically
from common.data.arrays import ImageArrays
from common.data.npz_reader import SPATIAL_DIMS_KEY

__all__ = ["write_npz"]


def _stored_images(images: np.ndarray) -> np.ndarray:
    """[N, C, H, W] floats as [N, H, W(, C)]: uint8 when that loses nothing, else float32.

    Volumes [N, 1, X, Y, Z] as [N, X, Y, Z].
    """
    if images.ndim == 5 and images.shape[1] != 1:
        raise ValueError(f"volumes are stored grayscale, got {images.shape[1]} channels")
    layout = images[:, 0] if images.shape[1] == 1 else images.transpose(0, 2, 3, 1)
    as_bytes = np.round(layout * 255.0).astype(np.uint8)
    if np.array_equal(as_bytes.astype(np.float32) / 255.0, layout):
        return as_bytes
    return layout.astype(np.float32)


def write_npz(
    path: Path,
    splits: dict[str, ImageArrays],
    class_names: tuple[str, ...],
    segment_names: tuple[str, ...] | None = None,
) -> Path:
    """Write ``splits`` (train, val, test) atomically; masks too when every split has them.

    Volumes keep their layout (``spatial_dims``) and their affines when every split has them.

    Patient ids too when every split has them, as ``{split}_patients`` strings "SPLIT-ID": a
    simulated site's data keeps its patients, so that patient-level DP-SGD can run on it. The
    ids are in-memory group labels that mean something within one split only (joining several
    caches numbers each split on its own), and splits never share a patient, so each split's
    ids are written under its own prefix.
    """
    arrays: dict[str, np.ndarray] = {"class_names": np.array(class_names)}
    with_masks = all(part.masks is not None for part in splits.values())
    if all(part.patients is not None for part in splits.values()):
        for name, part in splits.items():
            ids = np.asarray(part.patients).astype(str)
            arrays[f"{name}_patients"] = np.char.add(f"{name}-", ids) if ids.size else ids
    if any(part.images.ndim == 5 for part in splits.values()):
        arrays[SPATIAL_DIMS_KEY] = np.array(3)
    with_affines = all(part.affines is not None for part in splits.values())
    for name, part in splits.items():
        arrays[f"{name}_images"] = _stored_images(part.images)
        if with_affines and part.affines is not None:
            arrays[f"{name}_affines"] = part.affines
        arrays[f"{name}_labels"] = part.labels.astype(np.int64)
        if with_masks and part.masks is not None:
            arrays[f"{name}_masks"] = part.masks.astype(np.uint8)
    if with_masks and segment_names:
        arrays["segment_names"] = np.array(segment_names)
    path.parent.mkdir(parents=True, exist_ok=True)
    with replaced_atomically(path) as partial:
        np.savez(partial, allow_pickle=False, **arrays)  # the reader refuses pickles too
    return path
