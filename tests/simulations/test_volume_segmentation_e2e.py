"""Federated 3D lesion segmentation end to end: DICOM + SEG, prepare --dims 3, a 2-site DP run."""

import json
from pathlib import Path

import pytest
import torch
from warm_command_lines import run_command_line

from common.checkpoint import load_checkpoint
from common.data.loading import load_dataset
from common.errors import DataFormatError
from common.federation_job import FederationJob
from common.models import build_model
from common.tasks.volume_metrics import VOLUME_METRICS
from common.tasks.volume_segmentation import evaluate
from simulations.brain_lesions import write_brain_lesion_sites
from simulations.runner import fit_job_to_data, run_simulation_job
from simulations.simulation_settings import SimulationSettings

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def caches(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two simulated hospitals' brain MRI, each series one 24^3 volume at 6 mm."""
    root = tmp_path_factory.mktemp("brain")
    out = tmp_path_factory.mktemp("caches")
    for k, site in enumerate(write_brain_lesion_sites(root, sites=2, subjects_per_site=4)):
        result = run_command_line(
            "medfed-site", "prepare",
            "--data", str(site / "dicom"), "--out", str(out / f"site-{k}"),
            "--task", "segmentation", "--dims", "3", "--spacing", "6.0",
            "--size", "24",
            timeout=300,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
    return out


@pytest.fixture(scope="module")
def volume_run(caches: Path, tmp_path_factory: pytest.TempPathFactory):
    job = FederationJob.model_validate(
        {
            "task": "segmentation-3d",
            "rounds": 1,
            "train": {"batch_size": 4, "learning_rate": 0.003},
            "privacy": {"enabled": True, "target_epsilon": 8.0, "target_delta": 1e-4},
            "secure_aggregation": {"enabled": False},
        }
    )
    settings = SimulationSettings(data=caches, sites=2, partition="site")
    run_dir = tmp_path_factory.mktemp("run")
    summary = run_simulation_job(job, settings, run_dir, [])
    return run_dir, summary


def test_sites_train_a_3d_unet_with_patient_dp_and_report_mm_metrics(volume_run) -> None:
    run_dir, summary = volume_run
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["failures"] == []
    trained = [s for s in metrics["sites"] if s["phase"] == "train"]
    assert len(trained) == 2 and all(0 < s["epsilon"] <= 8.0 * 1.01 for s in trained)
    final = metrics["global"]["1"]
    assert set(VOLUME_METRICS) <= set(final)
    assert final["hd95_mm"] > 0 and final["lesions_found"] + final["lesions_missed"] > 0
    assert summary["metric_names"] == list(VOLUME_METRICS)


def test_checkpoint_is_a_3d_network_that_reproduces_the_global_dice(volume_run) -> None:
    run_dir, _ = volume_run
    checkpoint = load_checkpoint(run_dir / "global_model.pt")
    job = FederationJob.model_validate(checkpoint["job"])
    assert checkpoint["image_size"] == [24, 24, 24] and job.model.name == "unet"
    assert job.preprocessing is not None and job.preprocessing.dims == 3
    model = build_model(job.model, 1, 2, tuple(checkpoint["image_size"]), dp_enabled=True)
    model.load_state_dict(checkpoint["state_dict"])
    assert any(isinstance(m, torch.nn.Conv3d) for m in model.modules())
    splits = load_dataset(json.loads((run_dir / "simulation.json").read_text())["data"])
    final = json.loads((run_dir / "metrics.json").read_text())["global"]["1"]
    again = evaluate(model, splits.test, ("background", "lesion"))
    assert again["hd95_mm"] == pytest.approx(final["hd95_mm"], rel=1e-5)
    assert again["loss"] == pytest.approx(final["loss"], rel=1e-5)


def test_a_2d_job_is_refused_on_volumes(caches: Path) -> None:
    splits = load_dataset(caches)
    with pytest.raises(DataFormatError, match="3D samples"):
        fit_job_to_data(FederationJob.model_validate({"task": "segmentation"}), splits)
