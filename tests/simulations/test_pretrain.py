"""`medfed-sim pretrain` as a user runs it: weights a job then starts from, or a clear refusal."""

import json
import os
import subprocess
from pathlib import Path

import torch
from warm_command_lines import run_command_line

from common.checkpoint import load_checkpoint
from common.federation_job import FederationJob
from common.initial_weights import initial_state
from simulations.synthetic_lesions import write_synthetic_lesions


def _run(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": "200"}
    return run_command_line("medfed-sim", *args, cwd=cwd, timeout=300, env=env)


def test_pretrained_weights_learn_the_public_data_and_load_into_the_job(tmp_path: Path) -> None:
    public = write_synthetic_lesions(
        tmp_path / "public.npz", n_train=400, n_val=100, n_test=40, image_size=16, seed=5
    )
    result = _run(
        "pretrain", "--data", str(public), "--out", "w.pt", "--epochs", "8", "--lr", "0.003",
        "--format", "json", cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    summary = json.loads(result.stdout)
    assert summary["held_out_metrics"]["roc_auc"] > 0.7  # it learnt (0.75 measured in a direct run)
    assert sum(summary["class_counts"].values()) == 400
    saved = load_checkpoint(tmp_path / "w.pt")
    job = FederationJob.model_validate(
        {"image_size": 16, "model": {"initial_weights": str(tmp_path / "w.pt")}}
    )
    state = initial_state(job)
    assert state is not None
    assert all(torch.equal(state[k], v) for k, v in saved["state_dict"].items())


def test_weights_for_another_network_are_refused_by_the_run(tmp_path: Path) -> None:
    public = write_synthetic_lesions(
        tmp_path / "public.npz", n_train=40, n_val=10, n_test=10, image_size=16
    )
    made = _run("pretrain", "--data", str(public), "--out", "w.pt", "--epochs", "1", cwd=tmp_path)
    assert made.returncode == 0, made.stderr[-2000:]
    result = _run(
        "run", "--data", str(public), "--norm", "instance", "--initial-weights", "w.pt",
        "--rounds", "1", "--out", "run", cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 2, result.stderr[-2000:]
    assert "norm 'group' (checkpoint) vs 'instance' (job)" in result.stderr
