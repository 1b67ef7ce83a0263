"""`medfed-sim` as a user runs it: a process of its own, real exit codes and messages."""

import json
import os
import subprocess
from pathlib import Path

import pytest
from warm_command_lines import run_command_line

from simulations.synthetic_lesions import write_synthetic_lesions


def _run(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": "200"}
    return run_command_line("medfed-sim", *args, cwd=cwd, timeout=600, env=env)


def test_missing_dataset_is_a_data_error_naming_the_file(tmp_path: Path) -> None:
    result = _run("run", "--data", "nowhere/images.npz", cwd=tmp_path)
    assert result.returncode == 3, result.stderr
    assert "nowhere/images.npz" in result.stderr


def test_bad_partition_is_a_config_error_naming_the_value(tmp_path: Path) -> None:
    result = _run("run", "--data", "x.npz", "--partition", "dirichlet:-1", cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert "dirichlet:-1" in result.stderr


def test_batch_norm_with_dp_fails_before_training(tmp_path: Path) -> None:
    data = write_synthetic_lesions(
        tmp_path / "d.npz", n_train=40, n_val=10, n_test=10, image_size=16
    )
    result = _run("run", "--data", str(data), "--norm", "batch", cwd=tmp_path)
    assert result.returncode == 4, result.stderr
    assert "BatchNorm" in result.stderr
    assert not (tmp_path / "runs").exists() or not list((tmp_path / "runs").rglob("metrics.json"))


@pytest.mark.e2e
def test_fedprox_without_dp_learns_and_prints_the_comparison(tmp_path: Path) -> None:
    data = write_synthetic_lesions(tmp_path / "d.npz", n_train=800, n_val=80, n_test=200)
    result = _run(
        "run", "--data", str(data), "--sites", "2", "--rounds", "3", "--local-epochs", "2",
        "--no-dp", "--strategy", "fedprox", "--proximal-mu", "0.1", "--partition", "quantity:2.0",
        "--lr", "0.003", "--no-secure-aggregation", "--baseline", "pooled", "--out", "run",
        cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert "| federated |" in result.stdout and "| pooled |" in result.stdout
    assert "round 3/3" in result.stderr  # the per-round progress line
    global_rounds = json.loads((tmp_path / "run" / "metrics.json").read_text())["global"]
    assert global_rounds["3"]["roc_auc"] > max(0.75, global_rounds["0"]["roc_auc"])
    assert "epsilon" not in json.loads((tmp_path / "run" / "metrics.json").read_text())["sites"][0]


@pytest.mark.e2e
def test_json_summary_and_a_budget_refusal_exit_code(tmp_path: Path) -> None:
    """stdout is one JSON object; a run every site refuses on budget exits 5, not 0."""
    data = write_synthetic_lesions(
        tmp_path / "d.npz", n_train=80, n_val=20, n_test=20, image_size=16
    )
    common = ("run", "--data", str(data), "--sites", "2", "--rounds", "1",
              "--no-secure-aggregation", "--format", "json")  # fmt: skip
    result = _run(*common, "--out", "ok", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads(result.stdout)
    assert summary["rounds"] == 1 and summary["run_dir"] == "ok"
    assert set(summary["test_metrics"]["federated"]) >= {"accuracy", "roc_auc", "epsilon"}
    assert (
        summary["metric_names"]
        == json.loads((tmp_path / "ok" / "summary.json").read_text())["metric_names"]
    )

    refused = _run(*common, "--out", "refused", "--site-budget", "0.01", cwd=tmp_path)
    assert refused.returncode == 5, refused.stderr[-3000:]  # BUDGET_REFUSED
    error = json.loads(refused.stdout)["error"]
    assert error["kind"] == "budget_refused" and "round 1 trained on no site" in error["message"]
    assert "site-0's limit 0.01" in error["message"] and "site-1's limit 0.01" in error["message"]


@pytest.mark.e2e
def test_a_run_in_which_no_site_could_train_exits_7_with_the_sites_reason(tmp_path: Path) -> None:
    """Every site fails at SecAgg+'s first stage (an epsilon no noise reaches), which Flower's
    workflow drops without a word: the job does not end as if it trained, and says why."""
    data = write_synthetic_lesions(
        tmp_path / "d.npz", n_train=80, n_val=20, n_test=20, image_size=16
    )
    result = _run("run", "--data", str(data), "--sites", "2", "--rounds", "1",
                  "--dp-epsilon", "0.0001", "--out", "run", cwd=tmp_path)  # fmt: skip
    assert result.returncode == 7, result.stderr[-3000:]  # JOB_INCOMPLETE
    message = " ".join(result.stderr.split())
    assert "round 1 trained on no site, the global model is unchanged" in message
    assert "privacy.target_epsilon: 0.0001 cannot be reached" in message
    assert "Traceback" not in result.stdout and "| federated |" not in result.stdout
