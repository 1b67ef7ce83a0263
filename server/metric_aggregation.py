"""Aggregate site metrics: sample-weighted means that skip undefined values, worst-case epsilon."""

import math

from flwr.app import MetricRecord, RecordDict

from common import message_keys as keys

__all__ = ["aggregate_site_metrics"]

# Per-site facts that make no sense averaged.
_NOT_AVERAGED = {keys.SITE_ID, keys.DELTA, keys.NOISE_MULTIPLIER, keys.EPSILON_BUDGET}
# Privacy is reported for the worst-off site, never averaged.
_MAXIMISED = {keys.EPSILON, keys.EPSILON_SITE_TOTAL}


def aggregate_site_metrics(records: list[RecordDict], weight_key: str) -> MetricRecord:
    """Sample-weighted mean of every metric, over the sites where that metric is defined.

    A metric can be undefined at a site (ROC-AUC when its validation data holds one class): that
    site is left out of that metric's mean instead of turning it into NaN. Epsilon is reported as
    the maximum over sites, the privacy loss of the worst-off site, never as an average.
    """
    sums: dict[str, float] = {}
    weights: dict[str, float] = {}
    aggregated = MetricRecord()
    for record in records:
        metrics = next(iter(record.metric_records.values()))
        weight = float(metrics[weight_key])  # type: ignore[arg-type]
        for key, value in metrics.items():
            if key == weight_key or key in _NOT_AVERAGED or isinstance(value, list):
                continue
            value = float(value)
            if key in _MAXIMISED:
                aggregated[key] = max(float(aggregated.get(key, 0.0)), value)  # type: ignore[arg-type]
            elif math.isfinite(value) and weight > 0:
                sums[key] = sums.get(key, 0.0) + weight * value
                weights[key] = weights.get(key, 0.0) + weight
    for key, total in sums.items():
        aggregated[key] = total / weights[key]
    return aggregated
