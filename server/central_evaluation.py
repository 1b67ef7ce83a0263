"""The global model on a simulation's held-out test set, at argmax or at a chosen threshold."""

from pathlib import Path

import numpy as np
import torch

from common.data.loading import load_dataset
from common.federation_job import FederationJob
from common.models import build_model
from common.tasks import classification
from common.tasks.registry import task_for
from common.tasks.threshold import metrics_at_threshold

__all__ = ["CentralEvaluation"]


class CentralEvaluation:
    """Evaluates global states on the test split; keeps the last one's class probabilities."""

    def __init__(self, job: FederationJob, test_data: str) -> None:
        """Load the test split and build the job's network."""
        self.job = job
        self.test = load_dataset(Path(test_data)).test
        self.task = task_for(job.task)
        size = job.spatial_shape
        self.model = build_model(
            job.model, job.in_channels, job.num_classes, size, job.privacy.enabled
        )
        self._probabilities: np.ndarray | None = None

    def __call__(self, state: dict[str, torch.Tensor]) -> dict[str, float]:
        """Loss and metrics of ``state`` (thresholded metrics at argmax)."""
        self.model.load_state_dict(state)
        if self.job.task == "classification" and self.job.num_classes == 2:
            self._probabilities = classification.predict_probabilities(self.model, self.test)
        return self.task.evaluate(self.model, self.test, self.job.output_names)

    def at_threshold(self, threshold: float) -> dict[str, float]:
        """Thresholded metrics of the last evaluated state (binary classification), else {}."""
        if self._probabilities is None:
            return {}
        return metrics_at_threshold(self.test.labels, self._probabilities, threshold)
