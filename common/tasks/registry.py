"""One interface over the tasks: what the network learns, its loss, and how it is evaluated."""

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from torch import nn

from common.data.arrays import DEFAULT_SEGMENT_NAMES, DatasetSplits, ImageArrays
from common.federation_job import FederationJob
from common.tasks import classification, segmentation, volume_segmentation
from common.tasks.metrics import CLASSIFICATION_METRICS
from common.tasks.segmentation_metrics import SEGMENTATION_METRICS
from common.tasks.volume_metrics import VOLUME_METRICS

__all__ = ["Task", "task_for"]


def _whole(data: ImageArrays, _seed: int, _job: FederationJob) -> ImageArrays:
    return data


@dataclass(frozen=True)
class Task:
    """A task's training targets, loss and evaluation, and the metrics it reports."""

    name: str
    #: Reported metrics in display order.
    metric_names: tuple[str, ...]
    #: The metric a run is summed up by (higher is better).
    headline: str
    targets: Callable[[ImageArrays], np.ndarray]
    #: The training loss of a job (its class weights, for classification).
    criterion: Callable[[FederationJob], nn.Module]
    _evaluate: Callable[[nn.Module, ImageArrays, tuple[str, ...]], dict[str, float]]
    #: The names of the model's output classes, from the dataset.
    output_names: Callable[[DatasetSplits], tuple[str, ...]]
    #: What a round trains on, drawn with a seed: the samples themselves, or patches of them
    #: (each keeps its patient). Its patients must not depend on the seed (privacy planning).
    training_samples: Callable[[ImageArrays, int, FederationJob], ImageArrays] = _whole

    def evaluate(
        self, model: nn.Module, data: ImageArrays, output_names: tuple[str, ...]
    ) -> dict[str, float]:
        """Loss and metrics of ``model`` on ``data``."""
        return self._evaluate(model, data, output_names)


_TASKS = {
    "classification": Task(
        name="classification",
        metric_names=CLASSIFICATION_METRICS,
        headline="roc_auc",
        targets=classification.targets,
        criterion=lambda job: classification.criterion(job.train.class_weight_values),
        _evaluate=lambda model, data, _names: classification.evaluate(model, data),
        output_names=lambda splits: splits.class_names,
    ),
    "segmentation": Task(
        name="segmentation",
        metric_names=SEGMENTATION_METRICS,
        headline="dice",
        targets=segmentation.targets,
        criterion=lambda _job: segmentation.criterion(),
        _evaluate=segmentation.evaluate,
        output_names=lambda splits: splits.segment_names or DEFAULT_SEGMENT_NAMES,
    ),
    "segmentation-3d": Task(
        name="segmentation-3d",
        metric_names=VOLUME_METRICS,
        headline="dice",
        targets=segmentation.targets,
        criterion=lambda _job: segmentation.criterion(),
        _evaluate=volume_segmentation.evaluate,
        output_names=lambda splits: splits.segment_names or DEFAULT_SEGMENT_NAMES,
        training_samples=volume_segmentation.training_patches,
    ),
}


def task_for(name: str) -> Task:
    """The task called ``name`` (one of common.config.TASKS)."""
    try:
        return _TASKS[name]
    except KeyError:
        raise ValueError(f"unknown task {name!r}; choose from {sorted(_TASKS)}") from None
