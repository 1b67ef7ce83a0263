"""Find and read NIfTI cases: the Medical Segmentation Decathlon layout or images/ + masks/."""

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from monai.transforms import LoadImage

from common.errors import DataFormatError

__all__ = [
    "NiftiCase",
    "channel_names_of",
    "find_nifti_cases",
    "is_nifti_folder",
    "read_nifti_case",
    "segment_names_of",
]

_SUFFIXES = (".nii.gz", ".nii")


@dataclass(frozen=True)
class NiftiCase:
    """One image volume and, when there is one, its mask."""

    case_id: str
    image: Path
    mask: Path | None


def _case_id(path: Path) -> str:
    name = path.name
    return next((name[: -len(s)] for s in _SUFFIXES if name.endswith(s)), name)


def is_nifti_folder(root: Path) -> bool:
    """True for an MSD folder (dataset.json) or a folder with images/ holding NIfTI files."""
    images = root / "images"
    return (root / "dataset.json").is_file() or (
        images.is_dir() and any(p.name.endswith(_SUFFIXES) for p in images.iterdir())
    )


def find_nifti_cases(root: Path) -> list[NiftiCase]:
    """Cases of an MSD folder or of an images/ + masks/ folder.

    MSD: ``dataset.json``'s ``training`` list of image/label paths (imagesTr/labelsTr).
    Otherwise every NIfTI file in ``images/``, with the same-named file in ``masks/`` if any.
    """
    root = Path(root)
    manifest = root / "dataset.json"
    if manifest.is_file():
        try:
            entries = json.loads(manifest.read_text(encoding="utf-8"))["training"]
            cases = [
                NiftiCase(_case_id(Path(e["image"])), root / e["image"], root / e["label"])
                for e in entries
            ]
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            raise DataFormatError(
                manifest, f"not an MSD dataset.json with a 'training' list of image/label ({exc})"
            ) from None
    else:
        images = sorted(p for p in (root / "images").iterdir() if p.name.endswith(_SUFFIXES))
        cases = []
        for image in images:
            masks = [root / "masks" / image.name]
            cases.append(
                NiftiCase(_case_id(image), image, next((m for m in masks if m.is_file()), None))
            )
    missing = [str(c.image) for c in cases if not c.image.is_file()]
    missing += [str(c.mask) for c in cases if c.mask is not None and not c.mask.is_file()]
    if missing:
        raise DataFormatError(root, f"listed files not found: {missing}")
    return cases


def _manifest_names(root: Path, key: str) -> dict[int, str] | None:
    """An MSD ``dataset.json`` mapping of values to names ({"0": "FLAIR", ...}), if any."""
    manifest = Path(root) / "dataset.json"
    if not manifest.is_file():
        return None
    try:
        entries = json.loads(manifest.read_text(encoding="utf-8")).get(key)
        return {int(value): str(name) for value, name in entries.items()}
    except (json.JSONDecodeError, AttributeError, TypeError, ValueError):
        return None


def channel_names_of(root: Path, channels: int) -> tuple[str, ...]:
    """Names of ``channels`` image channels: an MSD ``dataset.json``'s "modality", or numbered.

    One channel has no name (the contract of a single-channel cache).
    """
    if channels == 1:
        return ()
    names = _manifest_names(root, "modality") or {}
    if sorted(names) != list(range(channels)):
        return tuple(f"channel-{k}" for k in range(channels))
    return tuple(names[k] for k in range(channels))


def segment_names_of(root: Path) -> tuple[str, ...] | None:
    """Mask value names from an MSD ``dataset.json`` ("labels": {"0": "background", ...})."""
    names = _manifest_names(root, "labels")
    if names is None:
        return None
    if sorted(names) != list(range(len(names))) or len(names) < 2:
        raise DataFormatError(
            Path(root) / "dataset.json", f"'labels' must name the values 0..K-1, got {names}"
        )
    return tuple(names[k] for k in range(len(names)))


def read_nifti_case(case: NiftiCase) -> tuple[np.ndarray, np.ndarray | None, tuple[float, float]]:
    """Read one case with MONAI's NibabelReader.

    Returns the image [channels, slices, rows, cols] (axial slices; one channel for a 3D
    volume, every channel of a 4D MSD volume, whose channels are its last axis), its mask
    [slices, rows, cols] (or None), and the in-plane spacing in mm.
    """
    loader = LoadImage(reader="NibabelReader", image_only=False)
    image, meta = loader(case.image)
    volume = np.asarray(image, dtype=np.float32)
    if volume.ndim == 3:
        volume = volume[..., None]
    if volume.ndim != 4:
        raise DataFormatError(
            case.image, f"expected a 3D or 4D (channels last) volume, got shape {volume.shape}"
        )
    spacing = tuple(float(v) for v in np.asarray(meta["pixdim"])[1:3])
    mask = None
    if case.mask is not None:
        mask = np.asarray(loader(case.mask)[0])
        if mask.ndim == 4 and mask.shape[3] == 1:
            mask = mask[..., 0]
        if mask.shape != volume.shape[:3]:
            raise DataFormatError(
                case.mask, f"mask shape {mask.shape} differs from image {volume.shape[:3]}"
            )
    # NIfTI arrays are (x, y, z, c): channels first, then axial slices, rows = y, columns = x
    slices_mask = None if mask is None else mask.transpose(2, 1, 0)
    return volume.transpose(3, 2, 1, 0), slices_mask, (spacing[1], spacing[0])
