"""Decode one DICOM file's pixels into modality units (Hounsfield units for CT)."""

import numpy as np
import pydicom
from pydicom.pixels import apply_rescale

__all__ = ["decode_frames"]


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
    values = np.asarray(apply_rescale(pixels, ds), dtype=np.float32)
    if ds.get("PhotometricInterpretation") == "MONOCHROME1":
        values = values.max() - values
    return values
