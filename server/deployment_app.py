"""The coordinator's ServerApp on a real federation, with SecAgg+ (all server-side SecAgg+ wiring).

SecAgg+ exists only on Flower's legacy path in flwr 1.41 (``SecAggPlusWorkflow`` inside
``DefaultWorkflow`` with a legacy strategy), so this app uses it for plain and secure jobs
alike. Sites send weight deltas; :class:`DeltaFedAvg` adds their (unmasked) average to the
global model, records each round's metrics and checkpoints the model after every round.
"""

import logging
import time
from pathlib import Path

import numpy as np
import torch
from flwr.app import Context, MetricRecord, RecordDict
from flwr.common import (
    EvaluateRes,
    FitIns,
    FitRes,
    Parameters,
    Scalar,
    ndarrays_to_parameters,
    parameters_to_ndarrays,
)
from flwr.server import Grid, LegacyContext, ServerApp, ServerConfig
from flwr.server.client_manager import ClientManager
from flwr.server.client_proxy import ClientProxy
from flwr.server.strategy import FedAvg
from flwr.server.workflow import DefaultWorkflow, SecAggPlusWorkflow

from common import message_keys as keys
from common.checkpoint import save_checkpoint
from common.federation_job import RUN_DIR_KEY, FederationJob
from common.models import build_model
from server.metric_aggregation import aggregate_site_metrics
from server.run_recorder import RunRecorder

__all__ = ["CHECKPOINT_NAME", "FIT_SECONDS", "DeltaFedAvg", "app", "run_job"]

logger = logging.getLogger(__name__)

CHECKPOINT_NAME = "global_model.pt"
#: Recorded per round: seconds from sending the round's first message to the new global model.
FIT_SECONDS = "fit_seconds"


def _weighted(replies: list[tuple[int, dict[str, Scalar]]]) -> dict[str, Scalar]:
    """Legacy (num_examples, metrics) pairs through the same aggregation as simulations."""
    records = [
        RecordDict(
            {
                keys.METRICS: MetricRecord(
                    {
                        keys.NUM_EXAMPLES: count,
                        **{
                            key: value
                            for key, value in metrics.items()
                            if isinstance(value, int | float) and not isinstance(value, bool)
                        },
                    }
                )
            }
        )
        for count, metrics in replies
    ]
    return dict(aggregate_site_metrics(records, keys.NUM_EXAMPLES))


class DeltaFedAvg(FedAvg):
    """FedAvg over weight deltas: global += weighted mean of the sites' deltas.

    Under SecAgg+ the mean arrives already unmasked as one vector; the strategy never sees
    a single site's delta. Metrics (loss, epsilon, counts) travel in clear and are recorded.
    """

    def __init__(
        self, job: FederationJob, model: torch.nn.Module, run_dir: Path, **kwargs: object
    ) -> None:
        self.job = job
        self.names = list(model.state_dict())
        self.dtypes = [tensor.dtype for tensor in model.state_dict().values()]
        self.global_arrays = [t.detach().cpu().numpy() for t in model.state_dict().values()]
        self.run_dir = run_dir
        self.recorder = RunRecorder(run_dir, job.rounds)
        self._fit_started = time.monotonic()
        super().__init__(
            initial_parameters=ndarrays_to_parameters(self.global_arrays),
            fit_metrics_aggregation_fn=_weighted,
            evaluate_metrics_aggregation_fn=_weighted,
            on_fit_config_fn=lambda r: {keys.SERVER_ROUND: r},
            on_evaluate_config_fn=lambda r: {keys.SERVER_ROUND: r},
            **kwargs,  # type: ignore[arg-type]
        )

    def configure_fit(
        self, server_round: int, parameters: Parameters, client_manager: ClientManager
    ) -> list[tuple[ClientProxy, FitIns]]:
        """Start the round's clock (SecAgg+ calls this at its first stage)."""
        self._fit_started = time.monotonic()
        return super().configure_fit(server_round, parameters, client_manager)

    def _record_failures(self, phase: str, server_round: int, failures: list[object]) -> None:
        for failure in failures:
            if isinstance(failure, BaseException):
                self.recorder.record_failure(phase, server_round, -1, repr(failure))
            else:
                proxy, res = failure  # type: ignore[misc]
                self.recorder.record_failure(
                    phase, server_round, proxy.node_id, str(res.status.message)
                )

    def aggregate_fit(
        self,
        server_round: int,
        results: list[tuple[ClientProxy, FitRes]],
        failures: list[tuple[ClientProxy, FitRes] | BaseException],
    ) -> tuple[Parameters | None, dict[str, Scalar]]:
        """Average the deltas, apply them, checkpoint and record the round."""
        for proxy, res in results:
            site_metrics = {keys.NUM_EXAMPLES: res.num_examples, **res.metrics}
            self.recorder.record_site("train", server_round, proxy.node_id, site_metrics)
        self._record_failures("train", server_round, list(failures))
        aggregated, metrics = super().aggregate_fit(server_round, results, failures)
        if aggregated is None:
            logger.warning("round %d: no update aggregated", server_round)
            return None, metrics
        deltas = parameters_to_ndarrays(aggregated)
        self.global_arrays = [
            (g.astype(np.float64) + d).astype(g.dtype)
            for g, d in zip(self.global_arrays, deltas, strict=True)
        ]
        seconds = time.monotonic() - self._fit_started
        self.recorder.record_federated("train", server_round, {**metrics, FIT_SECONDS: seconds})
        self._checkpoint(server_round, dict(metrics))
        return ndarrays_to_parameters(self.global_arrays), metrics

    def aggregate_evaluate(
        self,
        server_round: int,
        results: list[tuple[ClientProxy, EvaluateRes]],
        failures: list[tuple[ClientProxy, EvaluateRes] | BaseException],
    ) -> tuple[float | None, dict[str, Scalar]]:
        """Record each site's validation metrics and their weighted mean."""
        for proxy, res in results:
            site_metrics = {keys.NUM_EXAMPLES: res.num_examples, "loss": res.loss, **res.metrics}
            self.recorder.record_site("evaluate", server_round, proxy.node_id, site_metrics)
        self._record_failures("evaluate", server_round, list(failures))
        loss, metrics = super().aggregate_evaluate(server_round, results, failures)
        if loss is not None:
            self.recorder.record_federated("evaluate", server_round, {"loss": loss, **metrics})
        self.recorder.round_done(server_round)
        return loss, metrics

    def _checkpoint(self, server_round: int, metrics: dict[str, Scalar]) -> None:
        state = {
            name: torch.from_numpy(array.copy())
            for name, array in zip(self.names, self.global_arrays, strict=True)
        }
        save_checkpoint(
            self.run_dir / CHECKPOINT_NAME,
            state,
            self.job,
            server_round,
            self.job.in_channels,
            self.job.num_classes,
            (self.job.image_size, self.job.image_size),
            {k: float(v) for k, v in metrics.items() if isinstance(v, int | float)},
        )


def _fit_workflow(job: FederationJob) -> SecAggPlusWorkflow | None:
    secure = job.secure_aggregation
    if not secure.enabled:
        return None
    return SecAggPlusWorkflow(
        num_shares=secure.num_shares,
        reconstruction_threshold=secure.reconstruction_threshold,
        max_weight=secure.max_weight,
        clipping_range=secure.clipping_range,
        timeout=secure.timeout_s,
    )


def run_job(
    grid: Grid, context: Context, job: FederationJob | None = None, run_dir: Path | None = None
) -> DeltaFedAvg:
    """Run ``job`` (default: Flower's run config) on the sites connected to ``grid``."""
    run_dir = run_dir or Path(str(context.run_config[RUN_DIR_KEY]))
    job = job or FederationJob.from_flat(context.run_config)
    torch.manual_seed(job.seed)
    size = (job.image_size, job.image_size)
    model = build_model(job.model, job.in_channels, job.num_classes, size, dp_enabled=True)
    strategy = DeltaFedAvg(
        job,
        model,
        run_dir,
        fraction_fit=1.0,
        fraction_evaluate=1.0,
        min_fit_clients=job.min_sites,
        min_evaluate_clients=job.min_sites,
        min_available_clients=job.min_sites,
    )
    legacy = LegacyContext(
        context=context, config=ServerConfig(num_rounds=job.rounds), strategy=strategy
    )
    mode = "SecAgg+" if job.secure_aggregation.enabled else "plain FedAvg"
    logger.info(
        "job %s: %d rounds, at least %d sites, %s", job.name, job.rounds, job.min_sites, mode
    )
    DefaultWorkflow(fit_workflow=_fit_workflow(job))(grid, legacy)
    strategy.recorder.write()
    logger.info("job %s finished; global model in %s", job.name, run_dir / CHECKPOINT_NAME)
    return strategy


app = ServerApp()


@app.main()
def main(grid: Grid, context: Context) -> None:
    """Entry point named in the generated deployment app's pyproject."""
    _log_through_flower()
    run_job(grid, context)


def _log_through_flower() -> None:
    """Send medfed's log lines to Flower's handlers, which stream them to `medfed-server run`."""
    flower = logging.getLogger("flwr")
    for name in ("server", "common"):
        ours = logging.getLogger(name)
        ours.handlers = list(flower.handlers)
        ours.setLevel(logging.INFO)
        ours.propagate = False
