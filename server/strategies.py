"""Build the configured Flower strategy, recording every site's reply in the run folder."""

from collections.abc import Iterable
from typing import Any

from flwr.app import ArrayRecord, Message, MetricRecord
from flwr.serverapp.strategy import FedAdam, FedAvg, FedProx

from common.config import JobConfig
from server.metric_aggregation import aggregate_site_metrics
from server.run_recorder import RunRecorder

__all__ = ["build_strategy"]


class _RecordingMixin:
    """Records each site's metrics (and failures) before the strategy aggregates them."""

    recorder: RunRecorder
    central_evaluation: bool

    def _record(self, phase: str, server_round: int, replies: list[Message]) -> None:
        for reply in replies:
            node_id = reply.metadata.src_node_id
            if reply.has_error():
                self.recorder.record_failure(phase, server_round, node_id, reply.error.reason)
                continue
            for record in reply.content.metric_records.values():
                self.recorder.record_site(phase, server_round, node_id, dict(record))

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        replies = list(replies)
        self._record("train", server_round, replies)
        arrays, metrics = super().aggregate_train(server_round, replies)  # type: ignore[misc]
        if metrics is not None:
            self.recorder.record_federated("train", server_round, dict(metrics))
        return arrays, metrics

    def aggregate_evaluate(
        self, server_round: int, replies: Iterable[Message]
    ) -> MetricRecord | None:
        replies = list(replies)
        self._record("evaluate", server_round, replies)
        metrics = super().aggregate_evaluate(server_round, replies)  # type: ignore[misc]
        if metrics is not None:
            self.recorder.record_federated("evaluate", server_round, dict(metrics))
        if not self.central_evaluation:
            self.recorder.round_done(server_round)
        return metrics


class RecordingFedAvg(_RecordingMixin, FedAvg):
    """FedAvg (McMahan et al. 2017, arXiv:1602.05629) that records site replies."""


class RecordingFedProx(_RecordingMixin, FedProx):
    """FedProx (Li et al. 2020, arXiv:1812.06127) that records site replies."""


class RecordingFedAdam(_RecordingMixin, FedAdam):
    """FedAdam (Reddi et al. 2021, arXiv:2003.00295) that records site replies."""


def build_strategy(job: JobConfig, recorder: RunRecorder, central_evaluation: bool) -> FedAvg:
    """The strategy named in the job, waiting for all ``job.num_sites`` sites every round."""
    common: dict[str, Any] = {
        "fraction_train": 1.0,
        "fraction_evaluate": 1.0,
        "min_train_nodes": job.num_sites,
        "min_evaluate_nodes": job.num_sites,
        "min_available_nodes": job.num_sites,
        "train_metrics_aggr_fn": aggregate_site_metrics,
        "evaluate_metrics_aggr_fn": aggregate_site_metrics,
    }
    strategy: FedAvg
    if job.strategy.name == "fedprox":
        strategy = RecordingFedProx(**common, proximal_mu=job.strategy.proximal_mu)
    elif job.strategy.name == "fedadam":
        strategy = RecordingFedAdam(
            **common, eta=job.strategy.server_learning_rate, eta_l=job.train.learning_rate
        )
    else:
        strategy = RecordingFedAvg(**common)
    strategy.recorder = recorder  # type: ignore[attr-defined]
    strategy.central_evaluation = central_evaluation  # type: ignore[attr-defined]
    return strategy
