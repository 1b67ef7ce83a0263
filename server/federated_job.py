"""Run one federated job on a Flower Grid: initial model, strategy, evaluation, checkpoints."""

import logging
from dataclasses import dataclass
from pathlib import Path

import torch
from flwr.app import ArrayRecord, ConfigRecord, MetricRecord
from flwr.serverapp import Grid
from flwr.serverapp.strategy import Result

from common import message_keys as keys
from common.checkpoint import save_checkpoint
from common.config import JobConfig
from common.data.arrays import ImageArrays
from common.models import build_model
from common.tasks.registry import task_for
from server.run_recorder import RunRecorder
from server.strategies import build_strategy

__all__ = ["CHECKPOINT_NAME", "TaskSpec", "run_federated_job"]

logger = logging.getLogger(__name__)

CHECKPOINT_NAME = "global_model.pt"


@dataclass(frozen=True)
class TaskSpec:
    """Shape of the task's data and outputs, needed to build the shared model."""

    in_channels: int
    output_names: tuple[str, ...]
    image_size: tuple[int, int]

    @property
    def num_classes(self) -> int:
        """Output channels: image classes, or mask classes for segmentation."""
        return len(self.output_names)


def run_federated_job(
    grid: Grid,
    job: JobConfig,
    task: TaskSpec,
    run_dir: Path,
    test_data: ImageArrays | None,
) -> Result:
    """Train for ``job.rounds`` rounds; checkpoint the global model after every round.

    With ``test_data`` (simulations hold a test split) the global model is also evaluated
    centrally after every round; sites always evaluate it on their own validation data.
    """
    torch.manual_seed(job.seed)
    model = build_model(
        job.model, task.in_channels, task.num_classes, task.image_size, job.privacy.enabled
    )
    recorder = RunRecorder(run_dir, job.rounds)
    checkpoint = run_dir / CHECKPOINT_NAME

    def save(server_round: int, arrays: ArrayRecord, metrics: dict[str, float]) -> None:
        save_checkpoint(
            checkpoint,
            arrays.to_torch_state_dict(),
            job,
            server_round,
            task.in_channels,
            task.num_classes,
            task.image_size,
            metrics,
            task.output_names,
        )

    def evaluate_centrally(server_round: int, arrays: ArrayRecord) -> MetricRecord | None:
        assert test_data is not None
        model.load_state_dict(arrays.to_torch_state_dict())
        metrics = task_for(job.task).evaluate(model, test_data, task.output_names)
        recorder.record_global(server_round, metrics)
        save(server_round, arrays, metrics)
        recorder.round_done(server_round)
        return MetricRecord(metrics)

    strategy = build_strategy(job, recorder, central_evaluation=test_data is not None)
    config = ConfigRecord({keys.NUM_CLASSES: task.num_classes})
    result = strategy.start(
        grid=grid,
        initial_arrays=ArrayRecord(model.state_dict()),
        num_rounds=job.rounds,
        train_config=config,
        evaluate_config=ConfigRecord(dict(config)),
        evaluate_fn=evaluate_centrally if test_data is not None else None,
    )
    if test_data is None:
        save(job.rounds, result.arrays, {})
    recorder.write()
    logger.info("global model written to %s", checkpoint)
    return result
