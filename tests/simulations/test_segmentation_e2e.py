"""Federated lesion segmentation end to end: generated DICOM + DICOM SEG, prepare, 2-site run."""

import json
from pathlib import Path

import pytest
from warm_command_lines import run_command_line

from common.checkpoint import load_checkpoint
from common.data.loading import load_dataset
from common.federation_job import FederationJob
from common.models import build_model
from common.tasks.segmentation import evaluate
from server.run_report import write_report
from simulations.brain_lesions import write_brain_lesion_sites
from simulations.runner import run_simulation_job
from simulations.simulation_settings import SimulationSettings

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def caches(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two simulated hospitals' brain MRI with DICOM SEG lesion masks, prepared at 32 x 32."""
    root = tmp_path_factory.mktemp("brain")
    out = tmp_path_factory.mktemp("caches")
    for k, site in enumerate(write_brain_lesion_sites(root, sites=2, subjects_per_site=3)):
        result = run_command_line(
            "medfed-site", "prepare",
            "--data", str(site / "dicom"), "--out", str(out / f"site-{k}"),
            "--task", "segmentation", "--spacing", "6.0", "--size", "32",
            timeout=300,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
    return out


@pytest.fixture(scope="module")
def segmentation_run(caches: Path, tmp_path_factory: pytest.TempPathFactory):
    job = FederationJob.model_validate(
        {
            "task": "segmentation",
            "rounds": 2,
            "train": {"batch_size": 16, "learning_rate": 0.003},
            "privacy": {"enabled": True, "target_epsilon": 8.0, "target_delta": 1e-4},
            "secure_aggregation": {"enabled": False},
        }
    )
    settings = SimulationSettings(data=caches, sites=2, partition="site")
    run_dir = tmp_path_factory.mktemp("run")
    summary = run_simulation_job(job, settings, run_dir, ["pooled"])
    return job, run_dir, summary


def test_both_sites_train_with_dp_and_report_segmentation_metrics(segmentation_run) -> None:
    job, run_dir, _ = segmentation_run
    assert job.model.name == "basicunet"
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["failures"] == []
    evaluated = [s for s in metrics["sites"] if s["phase"] == "evaluate"]
    assert {(s["site"], s["round"]) for s in evaluated} == {
        (f"site-{k}", r) for k in (0, 1) for r in (1, 2)
    }
    for site in evaluated:
        assert 0.0 <= site["dice"] <= 1.0 and site["hd95"] >= 0.0
    epsilons = [s["epsilon"] for s in metrics["sites"] if s["phase"] == "train"]
    assert len(epsilons) == 4 and 0 < max(epsilons) <= 8.0 * 1.01
    final = metrics["global"]["2"]
    assert {"dice", "dice_lesion", "iou", "iou_lesion", "hd95", "hd95_lesion", "loss"} <= set(final)


def test_checkpoint_rebuilds_the_unet_and_reproduces_the_final_dice(segmentation_run) -> None:
    job, run_dir, _ = segmentation_run
    checkpoint = load_checkpoint(run_dir / "global_model.pt")
    assert checkpoint["class_names"] == ["background", "lesion"]
    assert FederationJob.model_validate(checkpoint["job"]).task == "segmentation"
    model = build_model(job.model, 1, 2, tuple(checkpoint["image_size"]), dp_enabled=True)
    model.load_state_dict(checkpoint["state_dict"])
    splits = load_dataset(json.loads((run_dir / "simulation.json").read_text())["data"])
    final = json.loads((run_dir / "metrics.json").read_text())["global"]["2"]
    again = evaluate(model, splits.test, ("background", "lesion"))
    assert again["dice"] == pytest.approx(final["dice"], abs=1e-6)
    assert again["loss"] == pytest.approx(final["loss"], rel=1e-5)


def test_summary_and_report_show_dice_for_federated_and_pooled(segmentation_run) -> None:
    _, run_dir, summary = segmentation_run
    assert summary["metric_names"] == ["dice", "iou", "hd95"]
    for name in ("federated", "pooled"):
        row = summary["test_metrics"][name]
        assert 0.0 <= row["dice"] <= 1.0 and row["epsilon"] > 0
    assert "| model | dice | iou | hd95 | epsilon |" in (run_dir / "summary.md").read_text()
    page = write_report(run_dir).read_text()
    assert "<th>dice</th>" in page and "<th>hd95</th>" in page
    # the federated model against the pooled baseline, and the lesion class's own Dice
    assert 'aria-label="Test dice: federated vs baselines"' in page and ">pooled<" in page
    assert 'aria-label="Test Dice per class"' in page and ">lesion<" in page
