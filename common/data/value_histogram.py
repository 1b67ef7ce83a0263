"""Counts of integer values: exact percentiles and moments without sorting.

np.percentile partially sorts its input: 6.9 ms for a 40-slice series' 655k resampling taps,
more than reading the series' files. Stored DICOM values are integers, so they can be counted
instead (one ``np.bincount`` pass, 0.9 ms); order statistics, numpy's linear interpolation
between them, and sums follow from the cumulative counts.
"""

from dataclasses import dataclass

import numpy as np
import torch

__all__ = ["ValueHistogram"]

#: Widest value range counted (8 MiB of counts); wider data (e.g. 32-bit) is left to numpy.
_MAX_RANGE = 1 << 20


def _count_from_zero(flat: np.ndarray, low: int, high: int) -> np.ndarray:
    """Counts of ``flat - low`` (0 .. high - low), as int64.

    Values of at most 16 bits spanning less than 2**15 are counted by torch.bincount as int16
    (0.27 ms for 655k values, single-threaded); np.bincount first copies its input to 64-bit
    integers (0.85 ms).
    """
    if flat.dtype.itemsize <= 2 and high - low < 1 << 15:
        if flat.dtype.itemsize == 1:
            shifted = flat.astype(np.int16) - np.int16(low)
        else:  # in the values' own 16 bits: exact, as 0 <= value - low < 2**15
            shifted = np.subtract(flat, flat.dtype.type(low)).view(np.int16)
        return torch.bincount(torch.from_numpy(shifted)).numpy()
    return np.bincount(flat - np.intp(low) if low else flat)


@dataclass(frozen=True)
class ValueHistogram:
    """How often each integer from ``low`` to ``low + len(counts) - 1`` occurs."""

    low: int
    counts: np.ndarray

    @classmethod
    def of(cls, values: np.ndarray) -> "ValueHistogram | None":
        """The histogram of integer ``values``; None for floats or a range wider than 2**20."""
        flat = values.ravel()
        if flat.dtype.kind not in "iu" or flat.size == 0:
            return None
        low, high = int(flat.min()), int(flat.max())
        if high - low >= _MAX_RANGE:
            return None
        return cls(low, _count_from_zero(flat, low, high))

    @property
    def size(self) -> int:
        """How many values were counted."""
        return int(self.counts.sum())

    def percentiles(self, percentiles: tuple[float, ...]) -> list[float]:
        """``np.percentile(values, percentiles)`` (its default 'linear' method)."""
        cumulative = np.cumsum(self.counts)
        last = int(cumulative[-1]) - 1
        out = []
        for q in percentiles:
            rank = last * q / 100.0
            below = int(np.floor(rank))
            # the k-th smallest value (k from 0) is the first whose cumulative count exceeds k
            v0, v1 = np.searchsorted(cumulative, [below, min(below + 1, last)], side="right")
            out.append(float(v0 + self.low) + (float(v1) - float(v0)) * (rank - below))
        return out

    def moments(self) -> tuple[int, float, float, float, float]:
        """Count, sum, sum of squares, minimum and maximum of the values (exact below 2**53)."""
        values = np.arange(self.low, self.low + self.counts.size, dtype=np.float64)
        weighted = self.counts * values  # products and sums, not np.dot: float64 dot is
        total = float(weighted.sum())  # a threaded BLAS call here (0.7 ms)
        total_sq = float((weighted * values).sum())
        present = np.flatnonzero(self.counts)
        return (
            self.size,
            total,
            total_sq,
            float(self.low + present[0]),
            float(self.low + present[-1]),
        )
