"""Class-weighted loss: a job setting, a mean of per-sample losses (DP-SGD's requirement)."""

import pytest
import torch
from torch import nn

from common.config_files import validate_model
from common.errors import ConfigError
from common.federation_job import FederationJob
from common.tasks.registry import task_for


def _criterion(weights: str) -> nn.Module:
    job = FederationJob.model_validate({"train": {"class_weights": weights}})
    return task_for("classification").criterion(job)


def test_the_batch_loss_is_the_mean_of_each_samples_weighted_loss() -> None:
    torch.manual_seed(0)
    logits, labels = torch.randn(6, 2), torch.tensor([0, 1, 1, 0, 0, 1])
    weighted = _criterion("1,3")
    batch = weighted(logits, labels)
    singles = torch.stack([weighted(logits[i : i + 1], labels[i : i + 1]) for i in range(6)])
    assert torch.allclose(batch, singles.mean())  # no sample's loss depends on another's label
    plain = nn.functional.cross_entropy(logits, labels, reduction="none")
    assert torch.allclose(singles, plain * torch.tensor([1.0, 3.0])[labels])
    # torch's own weighted mean divides by the batch's summed weights instead: not the same.
    assert not torch.allclose(batch, nn.CrossEntropyLoss(torch.tensor([1.0, 3.0]))(logits, labels))


def test_equal_weights_by_default() -> None:
    torch.manual_seed(0)
    logits, labels = torch.randn(5, 2), torch.tensor([0, 1, 1, 0, 1])
    assert torch.allclose(_criterion("")(logits, labels), nn.CrossEntropyLoss()(logits, labels))


@pytest.mark.parametrize(
    ("raw", "named"),
    [
        ({"train": {"class_weights": "1,2,3"}}, "3 weights for num_classes = 2"),
        ({"train": {"class_weights": "1,x"}}, "'x' is not a number"),
        ({"train": {"class_weights": "1,0"}}, "'0' must be a finite number > 0"),
        ({"task": "segmentation", "train": {"class_weights": "1,2"}}, "classification only"),
    ],
)
def test_bad_class_weights_are_named(raw: dict[str, object], named: str) -> None:
    with pytest.raises(ConfigError, match="job.toml") as error:
        validate_model(FederationJob, raw, "job.toml")
    assert named in str(error.value)
