"""Aggregate site metrics: sample-weighted means that skip undefined values, worst-case epsilon."""

import math
from collections.abc import Mapping

from common import message_keys as keys

__all__ = ["aggregate_metric_dicts"]

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
