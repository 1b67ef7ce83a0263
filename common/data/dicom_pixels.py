"""Decode one DICOM file's pixels into modality units (Hounsfield units for CT)."""

from dataclasses import dataclass
from functools import cached_property

import numpy as np
import pydicom
from pydicom.pixels import apply_rescale, pixel_array

from common.data.dicom_values import strings

__all__ = [
    "LinearUnits",
    "StoredFrames",
    "decode_error_reason",
    "decode_frames",
    "decode_stored",
    "frames_from_dataset",
]

_RESCALE_INTERCEPT, _RESCALE_SLOPE = 0x00281052, 0x00281053


def _rescale(ds: pydicom.Dataset, tag: int, default: float) -> float:
    values = strings(ds, tag)
    try:
        return float(values[0]) if values else default
    except ValueError:
        raise ValueError("RescaleSlope or RescaleIntercept is not a number") from None


@dataclass(frozen=True)
class LinearUnits:
    """Modality units of stored values as ``slope * stored + intercept``, inverted if asked.

    Applied in float32 in a fixed order, so units are the same whenever they are computed
    (at read time or once per series).
    """

    slope: float
    intercept: float
    #: MONOCHROME1: units are ``brightest - units`` (higher always means brighter).
    brightest: np.float32 | None = None

    def to_units(self, stored: np.ndarray) -> np.ndarray:
        """Float32 modality units of ``stored`` (a new array)."""
        return self.apply(stored.astype(np.float32))

    def apply(self, values: np.ndarray) -> np.ndarray:
        """Turn float32 stored values into modality units in place; returns ``values``."""
        if self.slope != 1.0:
            values *= np.float32(self.slope)
        if self.intercept != 0.0:
            values += np.float32(self.intercept)
        if self.brightest is not None:
            np.subtract(self.brightest, values, out=values)
        return values

    def moments(self, count: int, total: float, total_sq: float) -> tuple[float, float]:
        """Sum and sum of squares in units of ``count`` stored values with these sums."""
        scale, offset = self.slope, self.intercept
        if self.brightest is not None:  # brightest - (a s + b) = -a s + (brightest - b)
            scale, offset = -scale, float(self.brightest) - offset
        units_total = scale * total + offset * count
        units_sq = scale * scale * total_sq + 2 * scale * offset * total + offset * offset * count
        return units_total, units_sq


@dataclass(frozen=True)
class StoredFrames:
    """A file's frames [F, H, W] as stored, and how to turn any of them into modality units.

    Keeping the stored values lets a caller convert only the pixels it uses (float32 work on a
    full 512x512 frame costs more than the decoding of an uncompressed one).
    """

    values: np.ndarray
    slope: float
    intercept: float
    #: The dataset when its Modality LUT Sequence applies instead of slope and intercept.
    lut_source: pydicom.Dataset | None
    #: MONOCHROME1: inverted so that higher always means brighter.
    invert: bool

    @property
    def linear(self) -> bool:
        """True when modality units are monotonic in the stored values (no LUT)."""
        return self.lut_source is None

    def units(self, values: np.ndarray | None = None) -> np.ndarray:
        """Modality units (float32) of ``values``, a subset of the stored values (default all)."""
        stored = self.values if values is None else values
        if self.linear:
            return self.linear_units.to_units(stored)
        units = np.asarray(apply_rescale(stored, self.lut_source), dtype=np.float32)
        return self._brightest - units if self.invert else units

    @cached_property
    def extremes(self) -> np.ndarray:
        """Float32 modality units (before inversion) of the smallest and largest stored value."""
        ends = np.array([self.values.min(), self.values.max()])
        return LinearUnits(self.slope, self.intercept).to_units(ends)

    @cached_property
    def linear_units(self) -> LinearUnits:
        """The slope, intercept and inversion of linear frames (see :attr:`linear`)."""
        if not self.linear:
            raise ValueError("frames with a Modality LUT Sequence have no linear units")
        return LinearUnits(self.slope, self.intercept, self._brightest if self.invert else None)

    @cached_property
    def _brightest(self) -> np.float32:
        """The largest modality value of all frames (what MONOCHROME1 is inverted against)."""
        if self.linear:
            return np.float32(self.extremes.max())
        units = apply_rescale(self.values, self.lut_source)
        return np.float32(np.asarray(units, dtype=np.float32).max())


def decode_stored(ds: pydicom.Dataset) -> StoredFrames:
    """Decode the pixel data of a fully read dataset; raises on truncated or undecodable data.

    Compressed transfer syntaxes (JPEG, JPEG-LS, JPEG 2000, RLE) decode through the pylibjpeg
    plugins. Colour images are averaged to one channel; a single frame gets a frame axis.
    """
    pixels = pixel_array(ds)  # as ds.pixel_array, without its cache bookkeeping (~40 us)
    if int(ds.get("SamplesPerPixel", 1)) > 1:
        pixels = pixels.mean(axis=-1, dtype=np.float32)
    if int(ds.get("NumberOfFrames") or 1) == 1:
        pixels = pixels[None]
    return StoredFrames(
        values=pixels,
        slope=_rescale(ds, _RESCALE_SLOPE, 1.0) or 1.0,
        intercept=_rescale(ds, _RESCALE_INTERCEPT, 0.0),
        lut_source=ds if "ModalityLUTSequence" in ds else None,
        invert=ds.get("PhotometricInterpretation") == "MONOCHROME1",
    )


def frames_from_dataset(ds: pydicom.Dataset) -> np.ndarray:
    """Frames [F, H, W] as float32 modality units (after RescaleSlope/Intercept or the LUT).

    MONOCHROME1 is inverted so that higher always means brighter. Raises on truncated or
    undecodable pixel data.
    """
    return decode_stored(ds).units()


def decode_frames(path: str | object) -> np.ndarray:
    """Read ``path`` and return :func:`frames_from_dataset` of it."""
    return frames_from_dataset(pydicom.dcmread(path))


def decode_error_reason(exc: Exception) -> str:
    """Short reason from a pixel decoding error (structural: sizes, syntaxes, never tag values)."""
    text = str(exc).split(" - ")[0].split("\n")[0].strip()
    detail = f"{type(exc).__name__}: {text[:160]}" if text else type(exc).__name__
    return f"pixel data not decodable: {detail}"
