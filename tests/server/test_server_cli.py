"""medfed-server refuses unsafe or incomplete set-ups before starting anything."""

import subprocess
import sys
from pathlib import Path

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
