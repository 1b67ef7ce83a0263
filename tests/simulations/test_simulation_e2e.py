"""A real Flower simulation (Simulation Engine, Ray backend) of two hospitals, end to end."""

import csv
import json
from pathlib import Path

import pytest

from common.checkpoint import load_checkpoint
from common.config import JobConfig
from common.data.loading import load_dataset
from common.models import build_model
from common.tasks.classification import evaluate
from simulations.runner import run_simulation_job
from simulations.synthetic_lesions import write_synthetic_lesions

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("data") / "lesions.npz"
    return write_synthetic_lesions(path, n_train=400, n_val=80, n_test=200, image_size=16, seed=3)


@pytest.fixture(scope="module")
def dp_run(dataset: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[JobConfig, Path, dict]:
    job = JobConfig.model_validate(
        {
            "data": dataset,
            "num_sites": 2,
            "rounds": 2,
            "partition": "dirichlet:1.0",
            "train": {"batch_size": 25, "learning_rate": 0.003},
            "privacy": {"enabled": True, "target_epsilon": 8.0, "target_delta": 1e-4},
        }
    )
    run_dir = tmp_path_factory.mktemp("run")
    summary = run_simulation_job(job, run_dir, ["pooled", "local"])
    return job, run_dir, summary


def test_every_site_trains_and_evaluates_every_round(dp_run) -> None:
    _, run_dir, _ = dp_run
    metrics = json.loads((run_dir / "metrics.json").read_text())
    for phase in ("train", "evaluate"):
        for server_round in (1, 2):
            sites = {
                s["site-id"]
                for s in metrics["sites"]
                if s["phase"] == phase and s["round"] == server_round
            }
            assert sites == {0, 1}, (phase, server_round)
    assert metrics["failures"] == []
    assert set(metrics["global"]) == {"0", "1", "2"}


def test_num_examples_are_samples_matching_each_site_partition(dp_run) -> None:
    _, run_dir, _ = dp_run
    metrics = json.loads((run_dir / "metrics.json").read_text())
    sites = json.loads((run_dir / "sites.json").read_text())
    reported = {s["site-id"]: s["num-examples"] for s in metrics["sites"] if s["phase"] == "train"}
    assert reported == {site["site"]: site["train"] for site in sites}
    assert sum(reported.values()) == 400


def test_epsilon_is_reported_per_site_and_grows_to_the_target(dp_run) -> None:
    job, run_dir, _ = dp_run
    with (run_dir / "epsilon.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    by_site: dict[str, list[float]] = {}
    for row in sorted(rows, key=lambda r: int(r["round"])):
        by_site.setdefault(row["site"], []).append(float(row["epsilon"]))
    assert set(by_site) == {"0", "1"}
    for eps in by_site.values():
        assert len(eps) == 2 and 0 < eps[0] < eps[1] <= job.privacy.target_epsilon * 1.01


def test_checkpoint_reproduces_the_final_global_metrics(dp_run) -> None:
    job, run_dir, _ = dp_run
    checkpoint = load_checkpoint(run_dir / "global_model.pt")
    assert checkpoint["round"] == 2
    splits = load_dataset(job.data)
    model = build_model(job.model, 1, 2, (16, 16), dp_enabled=True)
    model.load_state_dict(checkpoint["state_dict"])
    final = json.loads((run_dir / "metrics.json").read_text())["global"]["2"]
    assert evaluate(model, splits.test)["roc_auc"] == pytest.approx(final["roc_auc"])


def test_summary_puts_federated_pooled_and_local_side_by_side(dp_run) -> None:
    _, run_dir, summary = dp_run
    rows = summary["test_metrics"]
    assert {"federated", "pooled", "local site 0", "local site 1", "local (mean of sites)"} <= set(
        rows
    )
    for name in ("federated", "pooled", "local site 0"):
        assert 0.0 <= rows[name]["roc_auc"] <= 1.0 and rows[name]["epsilon"] > 0
    table = (run_dir / "summary.md").read_text()
    assert "| federated |" in table and "| pooled |" in table
    assert json.loads((run_dir / "config.json").read_text())["num_sites"] == 2
