"""A job's initial weights: exactly the checkpoint's, or a refusal naming both architectures."""

from pathlib import Path

import pytest
import torch

from common.checkpoint import save_checkpoint
from common.errors import ConfigError
from common.federation_job import FederationJob, load_federation_job
from common.initial_weights import initial_state
from common.models import build_model


def _checkpoint(path: Path, job: FederationJob, seed: int) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    size = (job.image_size, job.image_size)
    model = build_model(job.model, job.in_channels, job.num_classes, size, job.privacy.enabled)
    state = model.state_dict()
    save_checkpoint(path, state, job, round_number=0)
    return state


def test_a_job_starts_from_exactly_the_named_weights(tmp_path: Path) -> None:
    pretrained = FederationJob(image_size=32)
    saved = _checkpoint(tmp_path / "weights.pt", pretrained, seed=7)
    job = FederationJob.model_validate(
        {"image_size": 32, "seed": 0, "model": {"initial_weights": str(tmp_path / "weights.pt")}}
    )
    state = initial_state(job)
    assert state is not None and state.keys() == saved.keys()
    for name, tensor in saved.items():
        assert torch.equal(state[name], tensor), name
    torch.manual_seed(job.seed)  # what the job would start from without them differs
    seeded = build_model(job.model, 1, 2, (32, 32), True).state_dict()
    assert any(not torch.equal(seeded[name], saved[name]) for name in saved)


def test_no_initial_weights_means_none() -> None:
    assert initial_state(FederationJob()) is None


def test_a_relative_path_in_job_toml_names_a_file_next_to_it(tmp_path: Path) -> None:
    (tmp_path / "jobs").mkdir()
    path = tmp_path / "jobs" / "job.toml"
    path.write_text('[model]\ninitial_weights = "public.pt"\n')
    job = load_federation_job(path)
    assert job.model.initial_weights == str(tmp_path / "jobs" / "public.pt")
    assert FederationJob.from_flat(job.to_flat()) == job  # the ServerApp reads the same path


@pytest.mark.parametrize(
    ("other", "named"),
    [
        ({"model": {"name": "resnet18"}}, "model 'resnet18' (checkpoint) vs 'cnn' (job)"),
        ({"num_classes": 3}, "num_classes 3 (checkpoint) vs 2 (job)"),
        ({"image_size": 64}, "image_size 64 (checkpoint) vs 32 (job)"),
    ],
)
def test_another_architecture_is_refused_naming_both(
    tmp_path: Path, other: dict[str, object], named: str
) -> None:
    path = tmp_path / "weights.pt"
    _checkpoint(path, FederationJob.model_validate({"image_size": 32, **other}), seed=1)
    job = FederationJob.model_validate({"image_size": 32, "model": {"initial_weights": str(path)}})
    with pytest.raises(ConfigError, match="another architecture") as error:
        initial_state(job)
    assert named in str(error.value) and str(path) in str(error.value)


def test_a_file_that_is_not_a_checkpoint_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "weights.pt"
    torch.save({"conv.weight": torch.zeros(3)}, path)
    job = FederationJob.model_validate({"model": {"initial_weights": str(path)}})
    with pytest.raises(ConfigError, match="not a medfed checkpoint"):
        initial_state(job)
    job = FederationJob.model_validate({"model": {"initial_weights": str(tmp_path / "no.pt")}})
    with pytest.raises(ConfigError, match="no such file"):
        initial_state(job)
