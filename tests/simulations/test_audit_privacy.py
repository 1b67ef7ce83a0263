"""`medfed-sim audit-privacy`: the patient-level loss attack tells memorised patients apart."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tomli_w
import torch

from common.checkpoint import save_checkpoint
from common.data.arrays import ImageArrays
from common.data.npz_writer import write_npz
from common.federation_job import FederationJob
from common.models import build_model
from simulations.membership_inference import audit_run, patient_scores
from simulations.simulation_settings import SimulationSettings

MEDFED_SIM = [sys.executable, "-c", "from simulations.cli import app; app()"]
SIZE = 16


def _patients(rng: np.random.Generator, count: int, first: int) -> ImageArrays:
    """``count`` patients of 4 noise images each, with random labels (learnable only by heart)."""
    n = 4 * count
    return ImageArrays(
        images=rng.random((n, 1, SIZE, SIZE), dtype=np.float32),
        labels=rng.integers(0, 2, n).astype(np.int64),
        patients=np.repeat(np.arange(first, first + count), 4).astype(np.int64),
    )


def _run_folder(run_dir: Path, memorise: bool) -> Path:
    """A finished run's files: job, settings, 2 sites' training patients, test set, model."""
    rng = np.random.default_rng(0)
    job = FederationJob.model_validate({"image_size": SIZE, "privacy": {"enabled": False}})
    sites = [_patients(rng, 10, 0), _patients(rng, 10, 100)]
    test = _patients(rng, 16, 200)
    empty = test.subset(np.arange(0))
    data = write_npz(run_dir / "data.npz", {"train": sites[0], "val": empty, "test": test},
                     ("a", "b"))  # fmt: skip
    for k, train in enumerate(sites):
        write_npz(run_dir / "sites" / f"site-{k}" / "data.npz",
                  {"train": train, "val": empty, "test": empty}, ("a", "b"))  # fmt: skip
    (run_dir / "job.toml").write_text(tomli_w.dumps(job.to_nested()))
    settings = SimulationSettings(data=data, sites=2)
    (run_dir / "simulation.json").write_text(settings.model_dump_json())
    torch.manual_seed(0)
    model = build_model(job.model, 1, 2, (SIZE, SIZE), dp_enabled=False)
    if memorise:  # overfit the members' random labels: their loss drops, the others' does not
        members = ImageArrays.concatenate(sites)
        images, labels = torch.from_numpy(members.images), torch.from_numpy(members.labels)
        optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
        for _ in range(150):
            optimizer.zero_grad()
            torch.nn.functional.cross_entropy(model(images), labels).backward()
            optimizer.step()
    save_checkpoint(run_dir / "global_model.pt", model.state_dict(), job, 1)
    return run_dir


def test_patient_score_is_minus_the_mean_loss_of_its_images() -> None:
    scores = patient_scores(np.array([1.0, 3.0, 0.5]), np.array([4, 4, 9]))
    assert scores.tolist() == [-2.0, -0.5]
    assert patient_scores(np.array([1.0, 2.0]), None).tolist() == [-1.0, -2.0]


def test_a_memorising_model_is_exposed_and_an_untrained_one_is_not(tmp_path: Path) -> None:
    exposed = audit_run(_run_folder(tmp_path / "overfit", memorise=True))
    assert (exposed.members, exposed.non_members) == (20, 16)
    assert exposed.attack_auc > 0.9 and exposed.tpr_at_1pct_fpr > 0.3
    assert exposed.member_loss < exposed.non_member_loss
    untrained = audit_run(_run_folder(tmp_path / "untrained", memorise=False))
    assert abs(untrained.attack_auc - 0.5) < 0.25


@pytest.mark.parametrize("output", ["text", "json"])
def test_the_command_reports_each_run(tmp_path: Path, output: str) -> None:
    run = _run_folder(tmp_path / "run", memorise=False)
    result = subprocess.run(
        [*MEDFED_SIM, "audit-privacy", str(run), str(tmp_path / "nowhere"), "--format", output],
        capture_output=True, text=True, timeout=120, env={**os.environ, "COLUMNS": "200"},
    )  # fmt: skip
    assert result.returncode == 2, result.stderr  # the second folder is not a run: named
    assert "nowhere" in result.stderr
    result = subprocess.run(
        [*MEDFED_SIM, "audit-privacy", str(run), "--format", output],
        capture_output=True, text=True, timeout=120, env={**os.environ, "COLUMNS": "200"},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    if output == "json":
        (row,) = json.loads(result.stdout)["runs"]
        assert row["members"] == 20 and row["dp"] is False
    else:
        assert "| 20 / 16 |" in result.stdout
