"""Decode one DICOM file's pixels into modality units (Hounsfield units for CT)."""

import numpy as np
import pydicom
from pydicom.pixels import apply_rescale, pixel_array

from common.data.dicom_values import strings

__all__ = ["decode_error_reason", "decode_frames", "frames_from_dataset"]

_RESCALE_INTERCEPT, _RESCALE_SLOPE = 0x00281052, 0x00281053


def _rescale(ds: pydicom.Dataset, tag: int, default: float) -> float:
    values = strings(ds, tag)
    try:
        return float(values[0]) if values else default
    except ValueError:
        raise ValueError("RescaleSlope or RescaleIntercept is not a number") from None


def _modality_units(pixels: np.ndarray, ds: pydicom.Dataset) -> np.ndarray:
    """Apply the modality LUT in float32 (pydicom's apply_rescale computes in float64)."""
    if "ModalityLUTSequence" in ds:
        return np.asarray(apply_rescale(pixels, ds), dtype=np.float32)
    values = pixels.astype(np.float32)
    slope = _rescale(ds, _RESCALE_SLOPE, 1.0) or 1.0
    intercept = _rescale(ds, _RESCALE_INTERCEPT, 0.0)
    if slope != 1.0:
        values *= np.float32(slope)
    if intercept != 0.0:
        values += np.float32(intercept)
    return values


def decode_frames(path: str | object) -> np.ndarray:
    """Read ``path`` and return :func:`frames_from_dataset` of it."""
    return frames_from_dataset(pydicom.dcmread(path))


def frames_from_dataset(ds: pydicom.Dataset) -> np.ndarray:
    """Frames [F, H, W] as float32 after the modality LUT (RescaleSlope/Intercept).

    Compressed transfer syntaxes (JPEG, JPEG-LS, JPEG 2000, RLE) decode through the pylibjpeg
    plugins. MONOCHROME1 is inverted so that higher always means brighter; colour images are
    averaged to one channel. Raises on truncated or undecodable pixel data.
    """
    pixels = pixel_array(ds)  # as ds.pixel_array, without its cache bookkeeping (~40 us)
    samples = int(ds.get("SamplesPerPixel", 1))
    frames = int(ds.get("NumberOfFrames") or 1)
    if samples > 1:
        pixels = pixels.mean(axis=-1, dtype=np.float32)
    if frames == 1:
        pixels = pixels[None]
    values = _modality_units(pixels, ds)
    if ds.get("PhotometricInterpretation") == "MONOCHROME1":
        values = values.max() - values
    return values


def decode_error_reason(exc: Exception) -> str:
    """Short reason from a pixel decoding error (structural: sizes, syntaxes, never tag values)."""
    text = str(exc).split(" - ")[0].split("\n")[0].strip()
    detail = f"{type(exc).__name__}: {text[:160]}" if text else type(exc).__name__
    return f"pixel data not decodable: {detail}"
