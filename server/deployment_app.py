"""The coordinator's ServerApp on a real federation, with SecAgg+ (all server-side SecAgg+ wiring).

SecAgg+ exists only on Flower's legacy path in flwr 1.41 (``SecAggPlusWorkflow`` inside
``DefaultWorkflow`` with a legacy strategy), so this app uses it for plain and secure jobs
alike. Sites send weight deltas; :class:`DeltaFedAvg` adds their (unmasked) average to the
global model, records each round's metrics and checkpoints the model after every round.
"""

import hashlib
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
from common.checkpoint import load_checkpoint, save_checkpoint
from common.federation_job import RESUME_KEY, RUN_DIR_KEY, FederationJob
from common.models import build_model
from server.federated_job import CHECKPOINT_NAME
from server.metric_aggregation import aggregate_site_metrics
from server.run_recorder import RunRecorder

__all__ = ["CHECKPOINT_NAME", "FIT_SECONDS", "DeltaFedAvg", "app", "run_job", "state_digest"]

logger = logging.getLogger(__name__)

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
    A round is complete once its evaluation is aggregated: only then is the global model
    checkpointed, so a resumed job repeats no completed round and loses none.

    ``completed_rounds`` (resuming) numbers this run's rounds after those already done.
    """

    def __init__(
        self,
        job: FederationJob,
        global_state: dict[str, torch.Tensor],
        recorder: RunRecorder,
        run_dir: Path,
        completed_rounds: int = 0,
        **kwargs: object,
    ) -> None:
        self.job = job
        self.names = list(global_state)
        self.global_arrays = [t.detach().cpu().numpy() for t in global_state.values()]
        self.run_dir = run_dir
        self.recorder = recorder
        self.completed_rounds = completed_rounds
        self._fit_started = time.monotonic()
        self._fit_metrics: dict[str, Scalar] = {}
        super().__init__(
            initial_parameters=ndarrays_to_parameters(self.global_arrays),
            fit_metrics_aggregation_fn=_weighted,
            evaluate_metrics_aggregation_fn=_weighted,
            on_fit_config_fn=lambda r: {keys.SERVER_ROUND: r + completed_rounds},
            on_evaluate_config_fn=lambda r: {keys.SERVER_ROUND: r + completed_rounds},
            **kwargs,  # type: ignore[arg-type]
        )

    def configure_fit(
        self, server_round: int, parameters: Parameters, client_manager: ClientManager
    ) -> list[tuple[ClientProxy, FitIns]]:
        """Start the round's clock (SecAgg+ calls this at its first stage)."""
        self._fit_started = time.monotonic()
        return super().configure_fit(server_round, parameters, client_manager)

    def _record_failures(self, phase: str, job_round: int, failures: list[object]) -> None:
        for failure in failures:
            if isinstance(failure, BaseException):
                self.recorder.record_failure(phase, job_round, -1, repr(failure))
            else:
                proxy, res = failure  # type: ignore[misc]
                self.recorder.record_failure(
                    phase, job_round, proxy.node_id, str(res.status.message)
                )

    def aggregate_fit(
        self,
        server_round: int,
        results: list[tuple[ClientProxy, FitRes]],
        failures: list[tuple[ClientProxy, FitRes] | BaseException],
    ) -> tuple[Parameters | None, dict[str, Scalar]]:
        """Average the deltas, apply them to the global model and record the sites' metrics."""
        job_round = server_round + self.completed_rounds
        for proxy, res in results:
            site_metrics = {keys.NUM_EXAMPLES: res.num_examples, **res.metrics}
            self.recorder.record_site("train", job_round, proxy.node_id, site_metrics)
        self._record_failures("train", job_round, list(failures))
        aggregated, metrics = super().aggregate_fit(server_round, results, failures)
        if aggregated is None:
            logger.warning("round %d: no update aggregated", job_round)
            return None, metrics
        deltas = parameters_to_ndarrays(aggregated)
        self.global_arrays = [
            (g.astype(np.float64) + d).astype(g.dtype)
            for g, d in zip(self.global_arrays, deltas, strict=True)
        ]
        seconds = time.monotonic() - self._fit_started
        self._fit_metrics = dict(metrics)
        self.recorder.record_federated("train", job_round, {**metrics, FIT_SECONDS: seconds})
        return ndarrays_to_parameters(self.global_arrays), metrics

    def aggregate_evaluate(
        self,
        server_round: int,
        results: list[tuple[ClientProxy, EvaluateRes]],
        failures: list[tuple[ClientProxy, EvaluateRes] | BaseException],
    ) -> tuple[float | None, dict[str, Scalar]]:
        """Record each site's validation metrics, then checkpoint the completed round."""
        job_round = server_round + self.completed_rounds
        for proxy, res in results:
            site_metrics = {keys.NUM_EXAMPLES: res.num_examples, "loss": res.loss, **res.metrics}
            self.recorder.record_site("evaluate", job_round, proxy.node_id, site_metrics)
        self._record_failures("evaluate", job_round, list(failures))
        loss, metrics = super().aggregate_evaluate(server_round, results, failures)
        if loss is not None:
            self.recorder.record_federated("evaluate", job_round, {"loss": loss, **metrics})
        self._checkpoint(job_round, {**self._fit_metrics, **metrics})
        self.recorder.round_done(job_round)
        return loss, metrics

    def global_state(self) -> dict[str, torch.Tensor]:
        """The current global model as a state dict."""
        return {
            name: torch.from_numpy(array.copy())
            for name, array in zip(self.names, self.global_arrays, strict=True)
        }

    def _checkpoint(self, job_round: int, metrics: dict[str, Scalar]) -> None:
        save_checkpoint(
            self.run_dir / CHECKPOINT_NAME,
            self.global_state(),
            self.job,
            job_round,
            self.job.in_channels,
            self.job.num_classes,
            (self.job.image_size, self.job.image_size),
            {k: float(v) for k, v in metrics.items() if isinstance(v, int | float)},
        )


def state_digest(state: dict[str, torch.Tensor]) -> str:
    """SHA-256 over a state dict's names and float32 values (logged when a job resumes)."""
    digest = hashlib.sha256()
    for name, tensor in state.items():
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().float().numpy().tobytes())
    return digest.hexdigest()


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
    """Run ``job`` (default: Flower's run config) on the sites connected to ``grid``.

    With the run config's resume flag, the job continues from the run folder's checkpoint:
    the global model of the last completed round, and the rounds after it.
    """
    run_dir = run_dir or Path(str(context.run_config[RUN_DIR_KEY]))
    job = job or FederationJob.from_flat(context.run_config)
    torch.manual_seed(job.seed)
    size = (job.image_size, job.image_size)
    model = build_model(job.model, job.in_channels, job.num_classes, size, dp_enabled=True)
    state, completed = model.state_dict(), 0
    if bool(context.run_config.get(RESUME_KEY, False)):
        checkpoint = load_checkpoint(run_dir / CHECKPOINT_NAME)
        state, completed = checkpoint["state_dict"], int(checkpoint["round"])
        logger.info(
            "job %s resumes after round %d/%d from global model %s",
            job.name, completed, job.rounds, state_digest(state),
        )  # fmt: skip
        recorder = RunRecorder.resume(run_dir, job.rounds, completed)
    else:
        recorder = RunRecorder(run_dir, job.rounds)
    strategy = DeltaFedAvg(
        job,
        state,
        recorder,
        run_dir,
        completed,
        fraction_fit=1.0,
        fraction_evaluate=1.0,
        min_fit_clients=job.min_sites,
        min_evaluate_clients=job.min_sites,
        min_available_clients=job.min_sites,
    )
    remaining = job.rounds - completed
    mode = "SecAgg+" if job.secure_aggregation.enabled else "plain FedAvg"
    logger.info(
        "job %s: %d round(s) to run, at least %d sites, %s",
        job.name,
        remaining,
        job.min_sites,
        mode,
    )
    if remaining > 0:
        legacy = LegacyContext(
            context=context, config=ServerConfig(num_rounds=remaining), strategy=strategy
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
