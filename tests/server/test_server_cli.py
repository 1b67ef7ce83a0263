"""medfed-server refuses unsafe or incomplete set-ups before starting anything."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

MEDFED_SERVER = str(Path(sys.executable).parent / "medfed-server")


def _run(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [MEDFED_SERVER, *args], capture_output=True, text=True, timeout=60, cwd=cwd
    )


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
