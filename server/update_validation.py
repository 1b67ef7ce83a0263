"""Check a site's update before it is aggregated: it is hostile input until proven otherwise."""

import numpy as np

__all__ = ["update_problem"]


def update_problem(
    update: list[np.ndarray],
    expected: list[np.ndarray],
    bound: float | None = None,
    max_norm: float | None = None,
    dtype: np.dtype | None = None,
) -> str | None:
    """Why ``update`` (weight deltas) cannot be aggregated with a model shaped like ``expected``.

    None when it can. ``bound`` caps the absolute value of every entry (SecAgg+ clamps the
    sites' deltas to its clipping range, so their average can never exceed it); ``max_norm``
    caps the L2 norm of the whole delta (sites clip theirs to it, so their mean stays within).
    ``dtype``, where given, is the one element type every array must have (the job's
    update precision); anything else is refused, wider or narrower.
    """
    if len(update) != len(expected):
        return f"{len(update)} arrays where the model has {len(expected)}"
    for index, (array, reference) in enumerate(zip(update, expected, strict=True)):
        if array.shape != reference.shape:
            return f"array {index} has shape {array.shape}, the model's is {reference.shape}"
        if not np.issubdtype(array.dtype, np.number):
            return f"array {index} holds {array.dtype}, not numbers"
        if dtype is not None and array.dtype != dtype:
            return f"array {index} holds {array.dtype}; the job's update_precision is {dtype}"
        if not np.isfinite(array).all():
            return f"array {index} holds non-finite values (NaN or infinity)"
        if bound is not None and array.size and float(np.abs(array).max()) > bound:
            return f"array {index} has an entry beyond +-{bound:g}"
    if max_norm is not None:
        norm = float(np.sqrt(sum(np.square(a, dtype=np.float64).sum() for a in update)))
        if norm > max_norm:
            return f"L2 norm {norm:.4g} is beyond the job's max_update_norm {max_norm:g}"
    return None
