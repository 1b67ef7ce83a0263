"""medfed predict states what the stored decision threshold was chosen on."""

from pathlib import Path

import pytest
import torch

from client.inference.model import load_trained_model
from client.inference.predict import decision
from common.checkpoint import save_checkpoint
from common.federation_job import FederationJob
from common.models import build_model


@pytest.mark.parametrize(
    ("threshold_data", "chosen_on"),
    [("", "the sites' validation data"), ("public-cache", "the coordinator's threshold data")],
)
def test_the_decision_names_where_its_threshold_came_from(
    tmp_path: Path, threshold_data: str, chosen_on: str
) -> None:
    job = FederationJob.model_validate({"image_size": 16, "threshold_data": threshold_data})
    torch.manual_seed(0)
    state = build_model(job.model, 1, 2, (16, 16), True).state_dict()
    path = save_checkpoint(tmp_path / "model.pt", state, job, 5, {"threshold": 0.2})
    text = decision(load_trained_model(path))["text"]
    stored = "the threshold stored in the checkpoint"
    assert text == f"1 when p_1 >= 0.2000 ({stored}, chosen on {chosen_on} in round 5)"
