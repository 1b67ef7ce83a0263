"""Decode one DICOM file's pixels into modality units (Hounsfield units for CT)."""

import numpy as np
import pydicom
from pydicom.pixels import apply_rescale

__all__ = ["decode_frames"]


def _modality_units(pixels: np.ndarray, ds: pydicom.Dataset) -> np.ndarray:
    """Apply the modality LUT in float32 (pydicom's apply_rescale computes in float64)."""
    if "ModalityLUTSequence" in ds:
        return np.asarray(apply_rescale(pixels, ds), dtype=np.float32)
    values = pixels.astype(np.float32)
    slope = float(ds.get("RescaleSlope", 1.0) or 1.0)
    intercept = float(ds.get("RescaleIntercept", 0.0) or 0.0)
    if slope != 1.0:
        values *= np.float32(slope)
    if intercept != 0.0:
        values += np.float32(intercept)
    return values


def decode_frames(path: str | object) -> np.ndarray:
    """Frames [F, H, W] as float32 after the modality LUT (RescaleSlope/Intercept).

    Compressed transfer syntaxes (JPEG, JPEG-LS, JPEG 2000, RLE) decode through the pylibjpeg
    plugins. MONOCHROME1 is inverted so that higher always means brighter; colour images are
    averaged to one channel. Raises on truncated or undecodable pixel data.
    """
    ds = pydicom.dcmread(path)
    pixels = ds.pixel_array
    samples = int(ds.get("SamplesPerPixel", 1))
    frames = int(ds.get("NumberOfFrames") or 1)
    if samples > 1:
        pixels = pixels.mean(axis=-1)
    if frames == 1:
        pixels = pixels[None]
    values = _modality_units(pixels, ds)
    if ds.get("PhotometricInterpretation") == "MONOCHROME1":
        values = values.max() - values
    return values
