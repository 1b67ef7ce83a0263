"""A site's weight delta at the job's upload precision, with what the rounding cost."""

import logging
from dataclasses import dataclass

import numpy as np

__all__ = ["PrecisionLoss", "UpdateOverflow", "to_update_precision"]

logger = logging.getLogger(__name__)


class UpdateOverflow(ValueError):
    """A delta entry beyond the largest finite value of the upload precision."""


@dataclass(frozen=True)
class PrecisionLoss:
    """What casting a delta cost: relative L2 error and entries flushed to zero."""

    relative_error: float
    flushed_to_zero: int
    nonzero: int


def _norm(arrays: list[np.ndarray]) -> float:
    return float(np.sqrt(sum(np.square(a, dtype=np.float64).sum() for a in arrays)))


def to_update_precision(
    delta: list[np.ndarray], dtype: np.dtype
) -> tuple[list[np.ndarray], PrecisionLoss]:
    """``delta`` cast to ``dtype`` (round to nearest), and what the rounding lost.

    Raises:
        UpdateOverflow: an entry is beyond ``dtype``'s largest finite value (it would become
            infinite and the coordinator would refuse the whole update).
    """
    if all(d.dtype == dtype for d in delta):
        return delta, PrecisionLoss(0.0, 0, sum(int(np.count_nonzero(d)) for d in delta))
    largest = float(np.finfo(dtype).max)
    for index, array in enumerate(delta):
        if array.size and float(np.abs(array).max()) > largest:
            raise UpdateOverflow(f"delta array {index} has an entry beyond {dtype}'s {largest:g}")
    cast = [d.astype(dtype) for d in delta]
    error = _norm([c.astype(np.float64) - d for c, d in zip(cast, delta, strict=True)])
    norm = _norm(delta)
    loss = PrecisionLoss(
        relative_error=error / norm if norm > 0 else 0.0,
        flushed_to_zero=sum(
            int(np.count_nonzero((c == 0) & (d != 0))) for c, d in zip(cast, delta, strict=True)
        ),
        nonzero=sum(int(np.count_nonzero(d)) for d in delta),
    )
    logger.debug("delta cast to %s: %s", dtype, loss)
    return cast, loss
