"""Find and read 2D image cases: pictures or 2D NIfTI in images/ + masks/, or an MSD-like 2D set.

Two layouts: ``images/`` with same-named masks (same name without its suffix) in ``masks/``,
or a ``dataset.json`` whose ``training`` list names image/label pairs (imagesTr/labelsTr).
Images are pictures (PNG, JPEG, TIFF, BMP, GIF) or 2D NIfTI; masks are pictures or 2D NIfTI.
"""

import json
import math
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
from nibabel.spatialimages import SpatialImage
from PIL import Image, ImageOps

from common.data.dicom_pixels import DEFAULT_MAX_PIXEL_MIB
from common.errors import DataFormatError

__all__ = [
    "PICTURE_SUFFIXES",
    "Picture",
    "PictureCase",
    "find_mask",
    "find_picture_cases",
    "is_2d_nifti",
    "is_picture_folder",
    "read_mask",
    "read_picture_file",
]

PICTURE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".gif")
_NIFTI_SUFFIXES = (".nii.gz", ".nii")
_SIXTEEN_BIT_MODES = ("I", "I;16", "I;16B", "I;16L", "I;16N")
#: Pillow modes kept as they are (grey, grey + alpha, RGB, RGBA); others are converted to RGB.
_KEPT_MODES = ("L", "LA", "RGB", "RGBA")


@dataclass(frozen=True)
class PictureCase:
    """One 2D image and, when there is one, its mask; ``name`` is its path under the folder."""

    case_id: str
    name: str
    image: Path
    mask: Path | None


@dataclass(frozen=True)
class Picture:
    """A decoded 2D image: stored values [H, W] or [H, W, C] (C = 2-4), rows first."""

    pixels: np.ndarray
    #: The largest value of the stored bit depth (255, 65535) for pictures; None for NIfTI,
    #: whose values are physical and are scaled by percentiles.
    full_scale: float | None
    #: In-plane (row, column) spacing in mm, when the format stores one (NIfTI).
    spacing: tuple[float, float] | None


def _stem(path: Path) -> str:
    name = path.name
    lower = name.lower()
    for suffix in _NIFTI_SUFFIXES + PICTURE_SUFFIXES:
        if lower.endswith(suffix):
            return name[: -len(suffix)]
    return name


def _is_picture(path: Path) -> bool:
    return path.name.lower().endswith(PICTURE_SUFFIXES)


def _is_nifti(path: Path) -> bool:
    return path.name.lower().endswith(_NIFTI_SUFFIXES)


def is_2d_nifti(path: Path) -> bool:
    """A NIfTI whose third dimension is absent or 1 (a 2D image, maybe with channels)."""
    try:
        image = nib.load(path)  # reads the header only
    except Exception:  # nibabel raises many types; the reader names the cause later
        return False
    if not isinstance(image, SpatialImage):
        return False
    shape = image.shape
    return len(shape) == 2 or (len(shape) >= 3 and shape[2] == 1)


def _is_2d_image(path: Path) -> bool:
    return _is_picture(path) or (_is_nifti(path) and is_2d_nifti(path))


def _msd_entries(manifest: Path) -> list[tuple[str, str | None]]:
    try:
        entries = json.loads(manifest.read_text(encoding="utf-8"))["training"]
        return [(str(e["image"]), str(e["label"]) if e.get("label") else None) for e in entries]
    except (json.JSONDecodeError, KeyError, TypeError, AttributeError, UnicodeDecodeError) as exc:
        raise DataFormatError(
            manifest, f"not an MSD dataset.json with a 'training' list of image/label ({exc})"
        ) from None


def is_picture_folder(root: Path) -> bool:
    """True for a 2D layout: its first image (by name) is a picture or a 2D NIfTI."""
    root = Path(root)
    manifest = root / "dataset.json"
    if manifest.is_file():
        entries = _msd_entries(manifest)
        return bool(entries) and _is_2d_image(root / entries[0][0])
    images = root / "images"
    if not images.is_dir():
        return False
    files = sorted(p for p in images.iterdir() if _is_picture(p) or _is_nifti(p))
    return bool(files) and _is_2d_image(files[0])


def find_picture_cases(root: Path) -> list[PictureCase]:
    """The cases of a 2D folder (see the module docstring), in name order.

    Raises:
        DataFormatError: dataset.json is malformed, or lists files that do not exist.
    """
    root = Path(root)
    manifest = root / "dataset.json"
    cases: list[PictureCase] = []
    if manifest.is_file():
        inside = root.resolve()
        for image, label in _msd_entries(manifest):
            mask = root / label if label else None
            for listed in (root / image, mask):
                if listed is not None and not listed.resolve().is_relative_to(inside):
                    raise DataFormatError(manifest, f"lists {listed}, outside {root}")
            cases.append(PictureCase(_stem(Path(image)), image, root / image, mask))
        missing = [c.name for c in cases if not c.image.is_file()]
        missing += [str(c.mask) for c in cases if c.mask is not None and not c.mask.is_file()]
        if missing:
            raise DataFormatError(manifest, f"lists files that do not exist: {missing[:5]}")
        return cases
    masks: dict[str, Path] = {}
    if (root / "masks").is_dir():
        for path in sorted((root / "masks").iterdir()):
            if path.is_file() and (_is_picture(path) or _is_nifti(path)):
                masks.setdefault(_stem(path), path)
    for path in sorted((root / "images").iterdir()):
        if path.is_file():
            name = path.relative_to(root).as_posix()
            cases.append(PictureCase(_stem(path), name, path, masks.get(_stem(path))))
    return cases


def find_mask(folder: Path, image_name: str) -> Path | None:
    """The picture or NIfTI in ``folder`` named like ``image_name`` (suffix aside), if any."""
    stem = _stem(Path(image_name))
    for path in sorted(folder.iterdir()) if folder.is_dir() else []:
        if path.is_file() and (_is_picture(path) or _is_nifti(path)) and _stem(path) == stem:
            return path
    return None


def _refuse_large(path: Path, values: int) -> None:
    """Refuse, before decoding, an image whose header declares more than the pixel cap."""
    declared_mib = values * 4 / 2**20  # decoded as float32
    if declared_mib > DEFAULT_MAX_PIXEL_MIB:
        raise DataFormatError(
            path,
            f"refused: its header declares {declared_mib:.0f} MiB of pixels, above the "
            f"{DEFAULT_MAX_PIXEL_MIB:.0f} MiB cap",
        )


def _picture_pixels(path: Path) -> tuple[np.ndarray, float]:
    with Image.open(path) as opened:
        _refuse_large(path, opened.width * opened.height * len(opened.getbands()))
        image = ImageOps.exif_transpose(opened)
        if image.mode in _SIXTEEN_BIT_MODES:
            pixels = np.asarray(image, dtype=np.float32)
            if pixels.size and (pixels.min() < 0 or pixels.max() > 65535):
                raise ValueError(f"{image.mode} pixel values outside 0..65535")
            return pixels, 65535.0
        if image.mode == "F":
            raise ValueError("floating-point images are not supported; save 8- or 16-bit")
        if image.mode == "1":
            image = image.convert("L")
        elif image.mode == "P":
            image = image.convert("RGBA" if "transparency" in image.info else "RGB")
        elif image.mode not in _KEPT_MODES:  # CMYK, YCbCr, LAB, HSV
            image = image.convert("RGB")
        return np.asarray(image, dtype=np.float32), 255.0


def _nifti_pixels(path: Path) -> tuple[np.ndarray, tuple[float, float]]:
    """A 2D NIfTI's values as [rows, cols] or [rows, cols, C] and its (row, col) spacing."""
    image = nib.load(path)
    if not isinstance(image, SpatialImage):  # nibabel also loads formats without an affine
        raise DataFormatError(path, "not a NIfTI image (no affine)")
    _refuse_large(path, math.prod(image.shape))
    raw = np.asanyarray(image.dataobj)
    if raw.dtype.names:  # RGB24 / RGBA32 NIfTI: one structured value per voxel
        raw = np.stack([raw[name] for name in raw.dtype.names], axis=-1)
    shape = raw.shape
    if len(shape) > 2 and shape[2] != 1:
        raise DataFormatError(path, f"expected a 2D image, got a volume of shape {shape}")
    plane = raw.reshape(shape[0], shape[1], -1)  # (x, y, channels), z = 1 dropped
    values = np.asarray(plane, dtype=np.float32).transpose(1, 0, 2)  # rows = y, columns = x
    if values.shape[2] == 1:
        values = values[..., 0]
    zooms = image.header.get_zooms()
    return values, (float(zooms[1]), float(zooms[0]))


def read_picture_file(path: Path) -> Picture:
    """Decode one 2D image, a picture (Pillow) or a 2D NIfTI (nibabel).

    Raises:
        DataFormatError: The file is a NIfTI volume, not a 2D image, or has no image suffix.
        Exception: Pillow and nibabel raise many types for damaged files; callers name them.
    """
    if _is_nifti(path):
        values, spacing = _nifti_pixels(path)
        return Picture(values, None, spacing)
    if not _is_picture(path):
        raise DataFormatError(
            path, f"not an image: {path.suffix or 'no suffix'} is not a picture or NIfTI suffix"
        )
    pixels, full_scale = _picture_pixels(path)
    return Picture(pixels, full_scale, None)


def read_mask(path: Path, shape: tuple[int, int], classes: int) -> np.ndarray:
    """A mask as uint8 class indices [H, W] for ``classes`` mask classes (background 0).

    Values 0..classes-1 are class indices; a two-valued mask {0, v} (e.g. 0/255 pictures) is
    binary, v meaning class 1. Colour masks are averaged first.

    Raises:
        DataFormatError: Its size differs from the image's, or its values are not classes.
        Exception: Pillow and nibabel raise many types for damaged files; callers name them.
    """
    pixels = read_picture_file(path).pixels
    if pixels.ndim == 3:
        pixels = pixels[..., : min(3, pixels.shape[2])].mean(axis=2)
    if pixels.shape != shape:
        raise DataFormatError(path, f"mask size {pixels.shape} differs from its image's {shape}")
    values = np.unique(pixels)
    if np.array_equal(values, np.rint(values)) and values.min() >= 0 and values.max() < classes:
        return pixels.astype(np.uint8)
    if len(values) <= 2 and values.min() == 0:
        return (pixels > 0).astype(np.uint8)
    shown = ", ".join(f"{v:g}" for v in values[:6]) + (", ..." if len(values) > 6 else "")
    raise DataFormatError(
        path, f"mask values {shown} are not class indices 0..{classes - 1} nor a binary mask"
    )
