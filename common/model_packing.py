"""The global model as one byte vector: a few message parts instead of two per tensor.

Flower sends each array of a message as its own parts (the array and its chunks), and a site
fetches every part with its own call through the Fleet gateway: sent one array per tensor, the
default CNN's 18 tensors made a fit message 39 parts (5 packed). The coordinator sends the
model's bytes as one ``uint8`` vector (each tensor in C order, in its own dtype, little-endian
as :mod:`common.update_encoding` writes a delta, one after another); a site splits it by its
own model's layout and refuses a vector of any other size or type.
"""

import math
from collections.abc import Sequence

import numpy as np

__all__ = ["Layout", "ModelPackingError", "layout_of", "pack_arrays", "unpack_arrays"]

#: Each tensor's shape and dtype, in the model's order.
Layout = list[tuple[tuple[int, ...], np.dtype]]


class ModelPackingError(ValueError):
    """A packed model that does not fit the receiving model's layout."""


def layout_of(arrays: Sequence[np.ndarray]) -> Layout:
    """The shapes and dtypes of ``arrays``, in order."""
    return [(tuple(array.shape), array.dtype) for array in arrays]


def pack_arrays(arrays: Sequence[np.ndarray]) -> np.ndarray:
    """The bytes of every array, one after another, as one ``uint8`` vector."""
    parts = [
        np.ascontiguousarray(array, array.dtype.newbyteorder("<")).reshape(-1).view(np.uint8)
        for array in arrays
    ]
    return np.concatenate(parts) if parts else np.empty(0, np.uint8)


def unpack_arrays(packed: np.ndarray, layout: Layout) -> list[np.ndarray]:
    """The arrays :func:`pack_arrays` packed, shaped and typed by ``layout`` (fresh copies)."""
    expected = sum(math.prod(shape) * dtype.itemsize for shape, dtype in layout)
    if packed.dtype != np.uint8 or packed.ndim != 1:
        raise ModelPackingError(
            f"expected the model as one uint8 vector, got {packed.dtype} of shape {packed.shape}"
        )
    if packed.size != expected:
        raise ModelPackingError(
            f"the model sent is {packed.size} bytes, this model's layout is {expected} bytes"
        )
    arrays, start = [], 0
    for shape, dtype in layout:
        end = start + math.prod(shape) * dtype.itemsize
        wire = np.frombuffer(packed[start:end].tobytes(), dtype.newbyteorder("<"))
        arrays.append(wire.reshape(shape).astype(dtype))  # a native, writeable copy
        start = end
    return arrays
