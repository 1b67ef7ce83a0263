"""Header values of string VRs (UI, CS, DS, IS) read from the raw element bytes.

pydicom converts an element on first access through its hooks and value classes, about 10 us
each: for a 256x256 slice that is as much as the rest of the per-file work. These VRs hold
plain ASCII (backslash-separated values, space or NUL padded), so splitting the raw bytes gives
the same strings. An element pydicom has already converted is read from its value.
"""

from typing import Literal, overload

import pydicom
from pydicom.multival import MultiValue

__all__ = ["floats", "strings", "text"]


def strings(ds: pydicom.Dataset, tag: int) -> list[str]:
    """The values of element ``tag``, stripped; empty when it is absent or empty."""
    element = ds.get_item(tag)
    value = None if element is None else element.value
    if value is None:
        return []
    if isinstance(value, bytes):
        parts = value.decode("latin-1").split("\\")
    elif isinstance(value, MultiValue | list | tuple):
        parts = [str(v) for v in value]
    else:
        parts = str(value).split("\\")
    parts = [part.strip(" \x00") for part in parts]
    return parts if any(parts) else []


def text(ds: pydicom.Dataset, tag: int) -> str:
    """The value of a single-valued element as a string ('' when absent)."""
    return "\\".join(strings(ds, tag))


@overload
def floats(ds: pydicom.Dataset, tag: int, count: Literal[2]) -> tuple[float, float] | None: ...
@overload
def floats(
    ds: pydicom.Dataset, tag: int, count: Literal[3]
) -> tuple[float, float, float] | None: ...
@overload
def floats(ds: pydicom.Dataset, tag: int, count: int | None = None) -> tuple[float, ...] | None: ...
def floats(ds: pydicom.Dataset, tag: int, count: int | None = None) -> tuple[float, ...] | None:
    """The values as floats; None when absent, not numbers, or not ``count`` of them."""
    element = ds.get_item(tag)
    raw = None if element is None else element.value
    numbers = None
    if isinstance(raw, bytes):  # float() reads backslash-separated, space-padded ASCII as is
        try:
            numbers = tuple(map(float, raw.split(b"\\")))
        except ValueError:  # empty, NUL-padded or not numbers: the careful path below
            numbers = None
    if numbers is None:
        try:
            numbers = tuple(float(v) for v in strings(ds, tag))
        except ValueError:
            return None
    if not numbers or (count is not None and len(numbers) != count):
        return None
    return numbers
