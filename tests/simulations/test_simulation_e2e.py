"""A real simulation of five hospitals on Flower's Simulation Engine, end to end.

The same ServerApp and ClientApp as a real federation, with DP-SGD and SecAgg+; one site drops
out from round 2 and the job goes on without it.
"""

import csv
import json
from pathlib import Path

import pytest
from sklearn.metrics import balanced_accuracy_score, f1_score

from common import message_keys as keys
from common.checkpoint import load_checkpoint
from common.data.loading import load_dataset
from common.federation_job import FederationJob
from common.models import build_model
from common.tasks.classification import evaluate, predict_probabilities
from common.tasks.threshold import choose_threshold, decode_counts
from simulations.runner import run_simulation_job
from simulations.simulation_settings import SimulationSettings
from simulations.synthetic_lesions import write_synthetic_lesions

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("data") / "lesions.npz"
    return write_synthetic_lesions(path, n_train=400, n_val=80, n_test=200, image_size=16, seed=3)


@pytest.fixture(scope="module")
def dp_run(
    dataset: Path, tmp_path_factory: pytest.TempPathFactory
) -> tuple[FederationJob, Path, dict]:
    job = FederationJob.model_validate(
        {
            "rounds": 2,
            "min_sites": 3,
            "train": {"batch_size": 20, "learning_rate": 0.003},
            "privacy": {"enabled": True, "target_epsilon": 8.0, "target_delta": 1e-4},
        }
    )
    settings = SimulationSettings(data=dataset, sites=5, partition="dirichlet:1.0", drop="4@2")
    run_dir = tmp_path_factory.mktemp("run")
    summary = run_simulation_job(job, settings, run_dir, ["pooled", "local"])
    return job, run_dir, summary


SITES = {f"site-{k}" for k in range(5)}


def test_every_site_trains_until_it_drops_out_and_the_run_folder_says_when(dp_run) -> None:
    _, run_dir, _ = dp_run
    metrics = json.loads((run_dir / "metrics.json").read_text())
    for phase in ("train", "evaluate"):
        for server_round, expected in ((1, SITES), (2, SITES - {"site-4"})):
            sites = {
                s["site"]
                for s in metrics["sites"]
                if s["phase"] == phase and s["round"] == server_round
            }
            assert sites == expected, (phase, server_round)
    dropped = {(f["round"], f["phase"], f["site"]) for f in metrics["failures"]}
    assert dropped == {(2, "train", "site-4"), (2, "evaluate", "site-4")}
    assert all("site-4 dropped out at round 2" in f["reason"] for f in metrics["failures"])
    assert set(metrics["global"]) == {"0", "1", "2"}
    log = (run_dir / "run.log").read_text()
    assert log.count("Secure aggregation completed") == 2  # SecAgg+ in both rounds


def test_num_examples_are_samples_matching_each_site_partition(dp_run) -> None:
    _, run_dir, _ = dp_run
    metrics = json.loads((run_dir / "metrics.json").read_text())
    sites = json.loads((run_dir / "sites.json").read_text())
    reported = {
        s["site"]: s["num-examples"]
        for s in metrics["sites"]
        if s["phase"] == "train" and s["round"] == 1
    }
    assert reported == {site["site"]: site["train"] for site in sites}
    assert sum(reported.values()) == 400


def test_epsilon_is_reported_per_site_and_grows_to_the_target(dp_run) -> None:
    job, run_dir, _ = dp_run
    with (run_dir / "epsilon.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    by_site: dict[str, list[float]] = {}
    for row in sorted(rows, key=lambda r: int(r["round"])):
        by_site.setdefault(row["site"], []).append(float(row["epsilon"]))
    assert set(by_site) == SITES
    for site, eps in by_site.items():
        assert len(eps) == (1 if site == "site-4" else 2)
        assert 0 < eps[0] < eps[-1] <= job.privacy.target_epsilon * 1.01 or len(eps) == 1


def test_each_simulated_site_keeps_its_own_ledger_and_audit_log(dp_run) -> None:
    _, run_dir, _ = dp_run
    for site in range(5):
        folder = run_dir / "sites" / f"site-{site}"
        assert (folder / "privacy-ledger.sqlite").is_file()
        assert (folder / "audit-log.sqlite").is_file()


def test_checkpoint_reproduces_the_final_global_metrics(dp_run) -> None:
    job, run_dir, _ = dp_run
    checkpoint = load_checkpoint(run_dir / "global_model.pt")
    assert checkpoint["round"] == 2
    splits = load_dataset(json.loads((run_dir / "simulation.json").read_text())["data"])
    model = build_model(job.model, 1, 2, (16, 16), dp_enabled=True)
    model.load_state_dict(checkpoint["state_dict"])
    final = json.loads((run_dir / "metrics.json").read_text())["global"]["2"]
    assert evaluate(model, splits.test)["roc_auc"] == pytest.approx(final["roc_auc"])


def test_summary_puts_federated_pooled_and_local_side_by_side(dp_run) -> None:
    _, run_dir, summary = dp_run
    rows = summary["test_metrics"]
    assert {"federated", "pooled", "local site 0", "local site 4", "local (mean of sites)"} <= set(
        rows
    )
    for name in ("federated", "pooled", "local site 0"):
        assert 0.0 <= rows[name]["roc_auc"] <= 1.0 and rows[name]["epsilon"] > 0
    table = (run_dir / "summary.md").read_text()
    assert "| federated |" in table and "| pooled |" in table
    assert json.loads((run_dir / "simulation.json").read_text())["sites"] == 5
    assert FederationJob.from_flat(_toml(run_dir / "job.toml")).rounds == 2


def _toml(path: Path) -> dict:
    import tomllib

    from common.federation_job import flatten

    return flatten(tomllib.loads(path.read_text()))


def test_thresholded_metrics_are_at_the_threshold_chosen_on_the_sites_validation_counts(
    dp_run,
) -> None:
    job, run_dir, summary = dp_run
    metrics = json.loads((run_dir / "metrics.json").read_text())
    replies = [s for s in metrics["sites"] if s["phase"] == "evaluate" and s["round"] == 2]
    assert len(replies) == 4 and all(keys.SCORE_COUNTS in s for s in replies)
    threshold = choose_threshold(sum(decode_counts(s[keys.SCORE_COUNTS]) for s in replies))
    assert metrics["federated"]["evaluate"]["2"]["threshold"] == threshold
    final = metrics["global"]["2"]
    assert final["threshold"] == threshold == summary["test_metrics"]["federated"]["threshold"]
    splits = load_dataset(json.loads((run_dir / "simulation.json").read_text())["data"])
    model = build_model(job.model, 1, 2, (16, 16), dp_enabled=True)
    model.load_state_dict(load_checkpoint(run_dir / "global_model.pt")["state_dict"])
    decided = predict_probabilities(model, splits.test)[:, 1] >= threshold
    assert final["f1"] == pytest.approx(f1_score(splits.test.labels, decided))
    assert final["balanced_accuracy"] == pytest.approx(
        balanced_accuracy_score(splits.test.labels, decided)
    )
    assert "threshold" in (run_dir / "summary.md").read_text().splitlines()[0]
