"""medfed-server refuses unsafe or incomplete set-ups before starting anything."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
from warm_command_lines import run_command_line

from simulations.synthetic_lesions import write_synthetic_lesions


def _run(*args: str, cwd: Path, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return run_command_line("medfed-server", *args, cwd=cwd, timeout=timeout)


def test_insecure_is_refused_on_a_public_address(tmp_path: Path) -> None:
    result = _run("start", "--kits", "kits", "--insecure", "--host", "0.0.0.0", cwd=tmp_path)
    assert result.returncode != 0
    assert "refused on 0.0.0.0" in result.stderr
    assert not (tmp_path / "coordinator-state").exists()  # nothing was started or written


def test_start_without_provisioned_kits_says_what_to_do(tmp_path: Path) -> None:
    result = _run("start", "--kits", "kits", cwd=tmp_path)
    assert result.returncode != 0
    assert "server.crt" in result.stderr and "medfed-server provision" in result.stderr


def test_run_without_a_coordinator_says_so(tmp_path: Path) -> None:
    (tmp_path / "job.toml").write_text('name = "j"\n')
    result = _run("run", "job.toml", "--state", "nowhere", cwd=tmp_path)
    assert result.returncode != 0
    assert "no coordinator running" in result.stderr


def test_a_bad_job_file_names_the_key(tmp_path: Path) -> None:
    (tmp_path / "job.toml").write_text("rounds = 0\n")
    result = _run("run", "job.toml", cwd=tmp_path)
    assert result.returncode != 0
    assert "rounds = 0" in result.stderr


def test_status_without_a_coordinator_is_a_json_error_object(tmp_path: Path) -> None:
    result = _run("status", "--state", "nowhere", "--format", "json", cwd=tmp_path)
    assert result.returncode == 8  # NOT_RUNNING in docs/exit-codes.md
    reply = json.loads(result.stdout)  # stdout holds the JSON object and nothing else
    assert reply == {
        "error": {
            "code": 8,
            "kind": "not_running",
            "message": "no coordinator running with state nowhere: medfed-server start",
        }
    }
    assert "no coordinator running" in result.stderr


@pytest.mark.parametrize("command", ["medfed-server", "medfed-site", "medfed-sim", "medfed"])
def test_every_command_line_has_version_and_short_help(tmp_path: Path, command: str) -> None:
    executable = str(Path(sys.executable).parent / command)
    version = subprocess.run([executable, "--version"], capture_output=True, text=True, timeout=60)
    assert version.returncode == 0 and version.stdout.strip() == f"{command} 0.1.0"
    short = subprocess.run([executable, "-h"], capture_output=True, text=True, timeout=60)
    assert short.returncode == 0 and "--help" in short.stdout and "Commands" in short.stdout


def test_a_job_dp_sgd_cannot_train_is_refused_before_the_coordinator_as_medfed_sim_does(
    tmp_path: Path,
) -> None:
    (tmp_path / "job.toml").write_text('name = "bn"\nimage_size = 16\n[model]\nnorm = "batch"\n')
    # torch is imported to build the network: slow on a loaded machine
    result = _run(
        "run", "job.toml", "--state", "nowhere", "--format", "json", cwd=tmp_path, timeout=300
    )
    assert result.returncode == 4, result.stderr  # MODEL_ERROR in docs/exit-codes.md
    error = json.loads(result.stdout)["error"]
    assert "no coordinator running" not in result.stderr  # refused before asking for one
    assert "BatchNorm" in error["message"] and "norm='group'" in error["message"]

    data = write_synthetic_lesions(
        tmp_path / "d.npz", n_train=40, n_val=10, n_test=10, image_size=16
    )
    simulated = run_command_line(
        "medfed-sim", "run", "--config", "job.toml", "--data", data, "--format", "json",
        cwd=tmp_path, timeout=300,
    )  # fmt: skip
    assert simulated.returncode == 4, simulated.stderr
    assert json.loads(simulated.stdout)["error"]["message"] == error["message"]


def test_threshold_data_that_is_not_there_is_refused_before_the_coordinator(
    tmp_path: Path,
) -> None:
    (tmp_path / "job.toml").write_text('name = "t"\nthreshold_data = "public-cache"\n')
    result = _run(
        "run", "job.toml", "--state", "nowhere", "--format", "json", cwd=tmp_path, timeout=300
    )
    assert result.returncode == 3, result.stderr  # DATA_ERROR in docs/exit-codes.md
    message = json.loads(result.stdout)["error"]["message"]
    assert str((tmp_path / "public-cache").resolve()) in message, message
    assert "no coordinator running" not in result.stderr
