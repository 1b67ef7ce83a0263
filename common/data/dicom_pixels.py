"""Decode one DICOM file's pixels into modality units (Hounsfield units for CT)."""

import os
from dataclasses import dataclass
from functools import cached_property
from typing import Any, Literal

import numpy as np
import pydicom
from pydicom.pixels import apply_color_lut, apply_rescale, pixel_array

from common.data.dicom_values import strings

__all__ = [
    "DEFAULT_MAX_PIXEL_MIB",
    "LinearUnits",
    "StoredFrames",
    "decode_frames",
    "decode_stored",
    "frames_from_dataset",
    "pixel_size_problem",
]

#: Default cap on one file's decoded pixels (MiB): a 2048x2048 mammogram is 8 MiB, a 1000-frame
#: 512x512 16-bit cine 500 MiB (raise ``--max-pixel-mib`` for those).
DEFAULT_MAX_PIXEL_MIB = 256.0

_RESCALE_INTERCEPT, _RESCALE_SLOPE = 0x00281052, 0x00281053
_SAMPLES, _PHOTOMETRIC, _NUMBER_OF_FRAMES = 0x00280002, 0x00280004, 0x00280008
_MODALITY_LUT = 0x00283000
_ROWS, _COLUMNS, _BITS_ALLOCATED = 0x00280010, 0x00280011, 0x00280100


def _header_int(ds: pydicom.Dataset, tag: int, default: int) -> int:
    if tag == _NUMBER_OF_FRAMES:  # IS: text, read from its raw bytes
        values = strings(ds, tag)
        return int(values[0]) if values else default
    element = ds.get_item(tag)
    raw = None if element is None else element.value
    if isinstance(raw, bytes) and len(raw) == 2:  # US as read: 2 bytes (pydicom converts slowly)
        order: Literal["little", "big"] = (
            "little" if getattr(element, "is_little_endian", True) else "big"
        )
        return int.from_bytes(raw, order)
    value = _value(ds, tag, default)
    return int(value[0] if isinstance(value, list | tuple) else value)


def pixel_size_problem(ds: pydicom.Dataset, max_mib: float) -> str | None:
    """Why an image header's declared pixel size is refused before decoding, or None.

    The decoded size is rows x columns x frames x samples x bits allocated, from the header
    alone; a header whose sizes are not numbers is reported as damaged.
    """
    try:
        dims = [
            _header_int(ds, _ROWS, 0),
            _header_int(ds, _COLUMNS, 0),
            _header_int(ds, _NUMBER_OF_FRAMES, 1) or 1,
            _header_int(ds, _SAMPLES, 1) or 1,
            _header_int(ds, _BITS_ALLOCATED, 16) or 16,
        ]
    except (TypeError, ValueError):
        return "damaged: its image size elements (Rows, Columns, NumberOfFrames) are not numbers"
    if min(dims) < 0:
        return "damaged: its header declares a negative image size"
    rows, columns, frames, samples, bits = dims
    declared = rows * columns * frames * samples * ((bits + 7) // 8)
    if declared <= max_mib * (1 << 20):
        return None
    return (
        f"refused: its header declares {declared / (1 << 20):.4g} MiB of pixels "
        f"({rows} x {columns} x {frames} frames x {samples} samples x {bits} bits), above "
        f"the {max_mib:g} MiB cap (--max-pixel-mib)"
    )


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

    def of(self, stored: float) -> np.float32:
        """The units of one stored value, as :meth:`apply` computes them (float32, same order)."""
        value = np.float32(stored)
        if self.slope != 1.0:
            value = value * np.float32(self.slope)
        if self.intercept != 0.0:
            value = value + np.float32(self.intercept)
        if self.brightest is not None:
            value = self.brightest - value
        return value

    @property
    def affine(self) -> tuple[float, float]:
        """(scale, offset) with units = scale * stored + offset, inversion included."""
        if self.brightest is None:
            return self.slope, self.intercept
        return -self.slope, float(self.brightest) - self.intercept

    def moments(self, count: int, total: float, total_sq: float) -> tuple[float, float]:
        """Sum and sum of squares in units of ``count`` stored values with these sums."""
        scale, offset = self.affine  # inverted: brightest - (a s + b) = -a s + (brightest - b)
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
        if self.lut_source is None:  # linear
            return self.linear_units.to_units(stored)
        units = np.asarray(apply_rescale(stored, self.lut_source), dtype=np.float32)
        return self._brightest - units if self.invert else units

    @cached_property
    def linear_units(self) -> LinearUnits:
        """The slope, intercept and inversion of linear frames (see :attr:`linear`)."""
        if not self.linear:
            raise ValueError("frames with a Modality LUT Sequence have no linear units")
        return LinearUnits(self.slope, self.intercept, self._brightest if self.invert else None)

    @cached_property
    def _brightest(self) -> np.float32:
        """The largest modality value of all frames (what MONOCHROME1 is inverted against)."""
        if self.lut_source is None:  # linear
            as_stored = LinearUnits(self.slope, self.intercept)
            return max(as_stored.of(v) for v in (self.values.min(), self.values.max()))
        units = apply_rescale(self.values, self.lut_source)
        return np.float32(np.asarray(units, dtype=np.float32).max())


def decode_stored(ds: pydicom.Dataset) -> StoredFrames:
    """Decode the pixel data of a fully read dataset; raises on truncated or undecodable data.

    Compressed transfer syntaxes (JPEG, JPEG-LS, JPEG 2000, RLE) decode through the pylibjpeg
    plugins. Colour images (palette colour through its palette) are averaged to one channel; a
    single frame gets a frame axis.
    """
    pixels = pixel_array(ds)  # as ds.pixel_array, without its cache bookkeeping (~40 us)
    # Integer tags: pydicom has converted these while decoding, so no keyword lookups (~1.5 us each)
    photometric = _value(ds, _PHOTOMETRIC, "")
    if photometric == "PALETTE COLOR":  # indices into a colour palette: the colours they show
        pixels = apply_color_lut(pixels, ds)
    if photometric == "PALETTE COLOR" or int(_value(ds, _SAMPLES, 1)) > 1:
        pixels = pixels.mean(axis=-1, dtype=np.float32)
    if int(_value(ds, _NUMBER_OF_FRAMES, 1) or 1) == 1:
        pixels = pixels[None]
    return StoredFrames(
        values=pixels,
        slope=_rescale(ds, _RESCALE_SLOPE, 1.0) or 1.0,
        intercept=_rescale(ds, _RESCALE_INTERCEPT, 0.0),
        lut_source=ds if _MODALITY_LUT in ds else None,
        invert=photometric == "MONOCHROME1",
    )


def _value(ds: pydicom.Dataset, tag: int, default: object) -> Any:
    """The value of element ``tag``, or ``default`` when it is absent or empty."""
    if tag not in ds:
        return default
    value = ds[tag].value
    return default if value is None or value == "" else value


def frames_from_dataset(ds: pydicom.Dataset) -> np.ndarray:
    """Frames [F, H, W] as float32 modality units (after RescaleSlope/Intercept or the LUT).

    MONOCHROME1 is inverted so that higher always means brighter. Raises on truncated or
    undecodable pixel data.
    """
    return decode_stored(ds).units()


def decode_frames(path: str | os.PathLike[str]) -> np.ndarray:
    """Read ``path`` and return :func:`frames_from_dataset` of it."""
    return frames_from_dataset(pydicom.dcmread(path))
