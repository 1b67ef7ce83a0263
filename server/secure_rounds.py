"""Flower's legacy round machinery, the only way flwr 1.41 runs SecAgg+: isolated here.

The ServerApp runs every round through ``DefaultWorkflow`` with a legacy strategy; with SecAgg+
its fit step is ``SecAggPlusWorkflow`` (Bell et al. 2020, eprint 2020/704). Nothing else in
server/ touches ``flwr.server.workflow`` or ``LegacyContext``; tests/server/test_flower_contract.py
fails loudly if a Flower upgrade changes what is used here.
"""

from flwr.app import Context
from flwr.server import Grid, LegacyContext, ServerConfig
from flwr.server.strategy import Strategy
from flwr.server.workflow import DefaultWorkflow, SecAggPlusWorkflow

from common.federation_job import SecureAggregationConfig

__all__ = ["run_rounds"]


def _fit_workflow(secure: SecureAggregationConfig) -> SecAggPlusWorkflow | None:
    if not secure.enabled:
        return None
    return SecAggPlusWorkflow(
        num_shares=secure.num_shares,
        reconstruction_threshold=secure.reconstruction_threshold,
        max_weight=secure.max_weight,
        clipping_range=secure.clipping_range,
        timeout=secure.timeout_s,
    )


def run_rounds(
    grid: Grid,
    context: Context,
    strategy: Strategy,
    rounds: int,
    secure: SecureAggregationConfig,
    round_timeout_s: float | None = None,
) -> None:
    """Run ``rounds`` rounds of ``strategy`` on the sites of ``grid``, with SecAgg+ if enabled.

    ``round_timeout_s`` bounds how long a plain round waits for its replies; sites that have
    not answered by then count as dropped for that round.
    """
    legacy = LegacyContext(
        context=context,
        config=ServerConfig(num_rounds=rounds, round_timeout=round_timeout_s),
        strategy=strategy,
    )
    DefaultWorkflow(fit_workflow=_fit_workflow(secure))(grid, legacy)
