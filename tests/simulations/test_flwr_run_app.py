"""The Flower App declared in pyproject.toml, run by Flower's own CLI (`flwr run . local`)."""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from simulations.synthetic_lesions import write_synthetic_lesions

pytestmark = pytest.mark.e2e

REPO = Path(__file__).parents[2]


def _processes_started_for(flwr_home: Path) -> list[int]:
    """PIDs of the local SuperLink `flwr run` detached for ``flwr_home``, and its descendants."""
    commands: dict[int, str] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                commands[int(entry.name)] = (
                    (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
                )
            except OSError:
                continue
    found = [
        pid for pid, cmd in commands.items() if "flower-superlink" in cmd and str(flwr_home) in cmd
    ]
    frontier = list(found)
    while frontier:  # SuperExec and flwr-simulation name their parent with --parent-pid
        parent = frontier.pop()
        children = [pid for pid, cmd in commands.items() if f"--parent-pid {parent}" in cmd]
        found += children
        frontier += children
    return found


def test_flwr_run_trains_the_app_from_pyproject(tmp_path: Path) -> None:
    data = write_synthetic_lesions(tmp_path / "d.npz", n_train=200, n_val=40, n_test=80)
    flwr_home = tmp_path / "flwr-home"
    flwr_home.mkdir()
    (flwr_home / "config.toml").write_text(
        '[superlink]\ndefault = "local"\n\n[superlink.local]\naddress = ":local:"\n'
    )
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "FLWR_HOME": str(flwr_home),
        "FLWR_TELEMETRY_ENABLED": "0",
        "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1",
    }
    run_config = f'data="{data}" num-sites=2 num-server-rounds=1 dp-enabled=false'
    command = [
        "flwr", "run", str(REPO), "local", "--stream",
        "--federation-config", "num-supernodes=2 client-resources-num-cpus=1",
        "--run-config", run_config,
    ]  # fmt: skip
    try:
        result = subprocess.run(
            command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=420
        )
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
        (run_dir,) = (tmp_path / "runs").iterdir()
        metrics = json.loads((run_dir / "metrics.json").read_text())
        assert set(metrics["global"]) == {"0", "1"}
        assert {s["site-id"] for s in metrics["sites"] if s["phase"] == "train"} == {0, 1}
        assert (run_dir / "global_model.pt").is_file()
    finally:
        for pid in _processes_started_for(flwr_home):
            os.kill(pid, signal.SIGTERM)
