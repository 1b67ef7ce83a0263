"""Aggregate site metrics: sample-weighted means that skip undefined values, worst-case epsilon."""

import math
from collections.abc import Mapping
from typing import TypeVar

from common import message_keys as keys

__all__ = [
    "GENERAL_SITE_METRICS",
    "MAX_METRIC_KEY_CHARS",
    "MAX_METRIC_TEXT_CHARS",
    "aggregate_metric_dicts",
    "bounded_site_metrics",
    "site_metric_allowance",
]

#: Bounds on a site's reply metrics; anything beyond them is dropped before it reaches a record
#: or a mean, so that one site cannot grow the run's files and columns without limit. The count
#: allowed is these general ones (loss, privacy, name, score counts) plus the job's task
#: metrics, each overall and per output class (:func:`site_metric_allowance`).
GENERAL_SITE_METRICS = 32
MAX_METRIC_KEY_CHARS = 100
#: The longest text metric medfed sends: score counts, 196 whole numbers below 10**12.
MAX_METRIC_TEXT_CHARS = 4096

Value = TypeVar("Value")

# Per-site facts that make no sense averaged.
_NOT_AVERAGED = {
    keys.SITE_NAME,
    keys.DELTA,
    keys.NOISE_MULTIPLIER,
    keys.EPSILON_BUDGET,
    keys.PRIVACY_UNIT,
}
# Privacy is reported for the worst-off site, never averaged.
_MAXIMISED = {keys.EPSILON, keys.EPSILON_SITE_TOTAL}


def site_metric_allowance(task_metrics: int, output_classes: int) -> int:
    """How many metrics a site's reply may carry for a task of ``task_metrics`` metrics."""
    return GENERAL_SITE_METRICS + task_metrics * (output_classes + 1)


def bounded_site_metrics(
    metrics: Mapping[str, Value], allowance: int
) -> tuple[dict[str, Value], int]:
    """The first ``allowance`` metrics within medfed's bounds, and how many were dropped."""
    kept: dict[str, Value] = {}
    for key, value in metrics.items():
        if len(kept) == allowance:
            break
        long_text = isinstance(value, str | bytes) and len(value) > MAX_METRIC_TEXT_CHARS
        if len(key) <= MAX_METRIC_KEY_CHARS and not long_text:
            kept[key] = value
    return kept, len(metrics) - len(kept)


def aggregate_metric_dicts(
    replies: list[tuple[int, Mapping[str, object]]], weight_key: str
) -> dict[str, float]:
    """Sample-weighted mean of every numeric metric over the sites where it is defined.

    ``replies`` are (number of samples, metrics) per site. A metric can be undefined or missing
    at a site (ROC-AUC when its validation data holds one class, any metric when it has no
    validation data): that site is left out of that metric's mean instead of turning it into
    NaN or failing the round. Epsilon is the maximum over sites, the privacy loss of the
    worst-off site, never an average. The total number of samples is reported as ``weight_key``.
    """
    sums: dict[str, float] = {}
    weights: dict[str, float] = {}
    aggregated: dict[str, float] = {}
    for count, metrics in replies:
        weight = float(count)
        for key, value in metrics.items():
            if key in _NOT_AVERAGED or key == weight_key:
                continue
            if isinstance(value, bool) or not isinstance(value, int | float):
                continue
            value = float(value)
            if key in _MAXIMISED:
                if math.isfinite(value):
                    aggregated[key] = max(aggregated.get(key, 0.0), value)
            elif math.isfinite(value) and weight > 0:
                sums[key] = sums.get(key, 0.0) + weight * value
                weights[key] = weights.get(key, 0.0) + weight
    for key, total in sums.items():
        aggregated[key] = total / weights[key]
    aggregated[weight_key] = float(sum(count for count, _ in replies))
    return aggregated
