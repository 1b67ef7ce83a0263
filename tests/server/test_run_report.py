"""The static run report: rounds, sites and privacy from a run folder's metrics.json."""

import json
from pathlib import Path

from server.run_report import write_report


def _run_folder(tmp_path: Path) -> Path:
    run = tmp_path / "run"
    run.mkdir()
    (run / "job.toml").write_text("rounds = 3\n")
    sites = [
        {"round": r, "phase": phase, "node_id": n, "site": site, "num-examples": 10,
         "train-loss": 1.0 / r, "epsilon": 2.0 * r, "epsilon-site-total": 2.5 * r,
         "epsilon-budget": 9.0, "roc_auc": 0.5 + 0.1 * r, "privacy-unit": "patient"}
        for r in (1, 2) for n, site in enumerate(("hospital-a", "hospital-b"))
        for phase in ("train", "evaluate")
    ]  # fmt: skip
    metrics = {
        "global": {},
        "federated": {
            "train": {"1": {"epsilon": 2.0}, "2": {"epsilon": 4.0}},
            "evaluate": {"1": {"roc_auc": 0.6, "loss": 0.7}, "2": {"roc_auc": 0.7, "loss": 0.6}},
        },
        "sites": sites,
        "failures": [{"round": 2, "phase": "train", "node_id": -1,
                      "reason": "site hospital-c refuses this round: <budget>"}],
    }  # fmt: skip
    (run / "metrics.json").write_text(json.dumps(metrics))
    return run


def test_the_report_shows_progress_rounds_sites_privacy_and_refusals(tmp_path: Path) -> None:
    page = write_report(_run_folder(tmp_path)).read_text()
    assert "round 2 of 3 completed" in page
    assert "hospital-a" in page and "hospital-b" in page
    assert page.count("<svg") == 4
    assert "hospital-a budget" in page  # the site's limit drawn beside its spending
    assert "0.700" in page  # round 2's ROC-AUC in the rounds table
    assert "epsilon per patient (max over sites)" in page  # the unit the sites reported
    assert page.count("epsilon per patient") >= 2  # the privacy chart's axis too
    assert "&lt;budget&gt;" in page  # reasons are escaped, never injected
    assert "<meta http-equiv" not in page  # a static report does not reload itself


def test_a_run_without_metrics_yet_renders_an_empty_page(tmp_path: Path) -> None:
    run = tmp_path / "starting"
    run.mkdir()
    page = write_report(run).read_text()
    assert "round 0 of ? completed" in page and "no data yet" in page
