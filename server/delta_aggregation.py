"""Combine the sites' validated weight deltas: the weighted mean, or a rule robust to poisoning.

Flower's own aggregate functions do the arithmetic. The robust rules ignore the sites' declared
sample counts (a hostile site cannot buy weight) and need every site's single delta, so a job
with SecAgg+ cannot use them (refused when the job is validated):

- ``median``: coordinate-wise median (Yin et al. 2018, arXiv:1803.01498), tolerates up to half
  the sites hostile; each coordinate may come from a different site.
- ``trimmed-mean``: coordinate-wise mean after cutting ``trim_fraction`` of the sites at each
  end (Yin et al. 2018); with n sites it drops ``int(trim_fraction * n)`` per side.
- ``krum``: the one delta closest (squared L2) to its n - f - 2 nearest neighbours
  (Blanchard et al. 2017, NeurIPS, "Machine Learning with Adversaries"); assumes n > 2f + 2.
- ``multi-krum``: the weighted mean of the n - f best-scored deltas (Blanchard et al. 2017).
"""

import logging

from flwr.common import NDArrays
from flwr.server.strategy.aggregate import (
    aggregate,
    aggregate_krum,
    aggregate_median,
    aggregate_trimmed_avg,
)

from common.config import StrategyConfig

__all__ = ["aggregate_deltas"]

logger = logging.getLogger(__name__)


def aggregate_deltas(strategy: StrategyConfig, deltas: list[tuple[NDArrays, int]]) -> NDArrays:
    """One delta from the sites' ``(delta, num_examples)`` pairs by ``strategy.aggregation``.

    Args:
        strategy: The job's strategy section (its ``aggregation`` and that rule's parameter).
        deltas: At least one validated delta with its (capped) number of examples.

    Returns:
        The aggregated delta, shaped as each input.
    """
    rule = strategy.aggregation
    if rule == "mean" or len(deltas) == 1:
        return aggregate(deltas)
    if rule == "median":
        return aggregate_median(deltas)
    if rule == "trimmed-mean":
        return aggregate_trimmed_avg(deltas, strategy.trim_fraction)
    hostile = strategy.byzantine_sites
    if len(deltas) <= 2 * hostile + 2:
        logger.warning(
            "%s assumes more than 2f + 2 = %d sites; this round has %d",
            rule, 2 * hostile + 2, len(deltas),
        )  # fmt: skip
    keep = max(1, len(deltas) - hostile) if rule == "multi-krum" else 0
    return aggregate_krum(deltas, num_malicious=hostile, to_keep=keep)
