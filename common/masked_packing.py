"""SecAgg+ masked vectors on the wire: each entry in the bytes its modulus needs, and no more.

SecAgg+ (Bell et al. 2020, eprint 2020/704) masks each site's quantised update modulo a
power of two M: every masked entry is uniform in [0, M) and does not compress, but it needs
only log2(M) bits. With M = 2**24 an entry travels in 3 bytes (0.75x the float32 model),
where Flower sends int64 (8 bytes) and a uint32 narrowing 4.

The price of a smaller M is fewer quantisation levels: the coordinator adds the n sites'
quantised entries (each in [0, levels]) modulo M, so ``n * levels < M`` keeps the sum from
wrapping. :func:`quantization_levels` gives Flower's own 2**22 levels while they fit (up to
3 sites at M = 2**24) and ``(M - 1) // n`` beyond.
"""

import numpy as np

__all__ = [
    "FLOWER_QUANTIZATION_LEVELS",
    "pack_masked",
    "packed_width",
    "quantization_levels",
    "unpack_masked",
]

#: Flower's default quantisation range of SecAggPlusWorkflow (flwr 1.41): 2**22 levels.
FLOWER_QUANTIZATION_LEVELS = 2**22


def packed_width(modulus: int) -> int:
    """Bytes per masked entry for a power-of-two ``modulus`` up to 2**32.

    Raises:
        ValueError: ``modulus`` is not a power of two in [2**8, 2**32].
    """
    if modulus < 2**8 or modulus > 2**32 or modulus & (modulus - 1):
        raise ValueError(f"SecAgg+ modulus {modulus} is not a power of two in [2**8, 2**32]")
    return (modulus.bit_length() - 1 + 7) // 8


def quantization_levels(modulus: int, sites: int) -> int:
    """Levels each site quantises to, such that the ``sites``' sum never wraps ``modulus``.

    Each site's quantised entry (and its quantised weight) lies in [0, levels]; their sum
    over ``sites`` is at most ``sites * levels < modulus``. Flower's 2**22 where that fits.
    """
    if sites < 1:
        raise ValueError(f"a SecAgg+ round needs sites, not {sites}")
    return min(FLOWER_QUANTIZATION_LEVELS, (modulus - 1) // sites)


def pack_masked(vector: np.ndarray, modulus: int) -> bytes:
    """``vector``'s entries (each in [0, modulus)) as little-endian ``packed_width`` bytes each.

    Raises:
        ValueError: an entry is outside [0, modulus).
    """
    width = packed_width(modulus)
    flat = np.asarray(vector).ravel()
    if flat.size and (int(flat.min()) < 0 or int(flat.max()) >= modulus):
        raise ValueError(f"masked entries outside [0, {modulus})")
    as_bytes = flat.astype("<u4").view(np.uint8).reshape(-1, 4)
    return as_bytes[:, :width].tobytes()


def unpack_masked(blob: bytes, shape: tuple[int, ...], modulus: int) -> np.ndarray:
    """The uint32 entries :func:`pack_masked` wrote, shaped ``shape``.

    Raises:
        ValueError: ``blob`` is not exactly ``packed_width`` bytes per entry of ``shape``.
    """
    width = packed_width(modulus)
    size = int(np.prod(shape, dtype=np.int64))
    if len(blob) != width * size:
        raise ValueError(
            f"{len(blob):,} bytes where shape {shape} needs {width * size:,} ({width} per entry)"
        )
    padded = np.zeros((size, 4), dtype=np.uint8)
    padded[:, :width] = np.frombuffer(blob, dtype=np.uint8).reshape(size, width)
    return padded.view("<u4").reshape(shape).astype(np.uint32, copy=False)
