"""The decision threshold chosen by the coordinator on labelled data of its own, each round."""

import torch

from common.data.arrays import ImageArrays
from common.federation_job import FederationJob
from common.job_model import build_job_model
from common.tasks.classification import threshold_on

__all__ = ["DataThreshold"]


class DataThreshold:
    """Global state -> the grid threshold of highest balanced accuracy on the job's threshold data.

    The data is the coordinator's (``threshold_data``, e.g. public data): no site's patient
    enters the choice, so it is no release about them (docs/privacy.md).
    """

    def __init__(self, job: FederationJob, data: ImageArrays) -> None:
        """Keep the data and build the job's network to score it."""
        self.data = data
        self.model = build_job_model(job)

    def __call__(self, state: dict[str, torch.Tensor]) -> float | None:
        """The threshold for ``state``; None if the data lacks a class."""
        self.model.load_state_dict(state)
        return threshold_on(self.model, self.data)
