"""A simulation interrupted mid-run resumes from its last completed round: none lost, none twice."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from simulations.synthetic_lesions import write_synthetic_lesions

pytestmark = pytest.mark.e2e

MEDFED_SIM = [sys.executable, "-c", "from simulations.cli import app; app()"]
#: Enough rounds that the run is still going when the interrupt lands: it is sent within 0.1 s
#: of round 1's checkpoint, and a run of 5 rounds had finished 3 when it stopped (idle machine,
#: about 0.5 s a round); the resumed part runs the rest.
ROUNDS = 10


def _processes_of(flwr_home: Path) -> list[int]:
    """PIDs whose environment names this run's FLWR_HOME (the SuperLink and what it started)."""
    marker = f"FLWR_HOME={flwr_home}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            try:
                if marker in (entry / "environ").read_bytes().split(b"\0"):
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


def test_an_interrupted_simulation_resumes_with_no_round_lost(tmp_path: Path) -> None:
    data = write_synthetic_lesions(tmp_path / "d.npz", n_train=120, n_val=40, n_test=40,
                                   image_size=16)  # fmt: skip
    run_dir = tmp_path / "run"
    command = [*MEDFED_SIM, "run", "--data", str(data), "--sites", "2", "--rounds", str(ROUNDS),
               "--no-dp", "--no-secure-aggregation", "--out", str(run_dir)]  # fmt: skip
    first = subprocess.Popen(command, cwd=tmp_path, stderr=subprocess.DEVNULL)
    try:  # the checkpoint appears when round 1 is complete; later rounds are under way
        deadline = time.monotonic() + 300
        while not (run_dir / "global_model.pt").exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        first.send_signal(signal.SIGTERM)  # a scheduler stops it (Ctrl-C ends it the same way)
        first.wait(timeout=120)
    finally:
        if first.poll() is None:
            first.kill()
    assert first.returncode == 128 + signal.SIGTERM
    assert _processes_of(run_dir / "flwr-home") == []  # the SuperLink and its children stopped
    done = json.loads((run_dir / "metrics.json").read_text())
    completed = max(int(r) for r in done["global"])
    assert 1 <= completed < ROUNDS

    resumed = subprocess.run(
        [*MEDFED_SIM, "run", "--resume", str(run_dir)],
        cwd=tmp_path, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"resumes after round {completed}/{ROUNDS}" in (run_dir / "run.log").read_text()
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert set(metrics["global"]) == {str(r) for r in range(ROUNDS + 1)}
    trained = sorted((s["round"], s["site"]) for s in metrics["sites"] if s["phase"] == "train")
    assert trained == sorted((r, f"site-{k}") for r in range(1, ROUNDS + 1) for k in (0, 1))
    assert _processes_of(run_dir / "flwr-home") == []
