"""`medfed-sim run --ray-address`: the simulated sites run on an existing two-node Ray cluster.

The cluster is a head and a second node joining it, both on 127.0.0.1 with one CPU each
(`ray start --block`, each in a session of its own, stopped by PID with everything it started).
"""

import json
import os
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from common.federation_job import FederationJob
from common.flower_processes import (
    flower_command,
    free_port,
    start_logged,
    stop_session,
    wait_for_port,
)
from simulations.runner import run_simulation_job
from simulations.simulation_settings import SimulationSettings
from simulations.synthetic_lesions import write_synthetic_lesions

pytestmark = pytest.mark.e2e


def _active_nodes(ray: str, address: str, env: dict[str, str]) -> int:
    status = subprocess.run(
        [ray, "status", "--address", address], env=env, capture_output=True, text=True
    )
    active = status.stdout.partition("Active:")[2].partition("Pending:")[0]
    return len(re.findall(r"node_[0-9a-f]+", active))


@pytest.fixture(scope="module")
def ray_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """(head address, the cluster's temporary folder) of a running two-node cluster."""
    ray = flower_command("ray")
    logs = tmp_path_factory.mktemp("ray-logs")
    temp = Path(tempfile.mkdtemp(prefix="mr-"))  # Ray's socket paths must stay short
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    port = free_port()
    address = f"127.0.0.1:{port}"
    common = ["start", "--block", "--num-cpus", "1", "--node-ip-address", "127.0.0.1",
              "--disable-usage-stats"]  # fmt: skip
    head = start_logged(
        [ray, *common, "--head", "--port", str(port), "--temp-dir", str(temp),
         "--include-dashboard", "false"],
        logs / "head.log", env,
    )  # fmt: skip
    started = [head]
    try:
        assert wait_for_port("127.0.0.1", port, 90.0, head), (logs / "head.log").read_text()
        started.append(start_logged([ray, *common, "--address", address], logs / "node.log", env))
        deadline = time.monotonic() + 90.0
        while _active_nodes(ray, address, env) < 2:
            assert time.monotonic() < deadline, (logs / "node.log").read_text()
            time.sleep(2.0)
        yield address, temp
    finally:
        for process in reversed(started):
            stop_session(process)
        shutil.rmtree(temp, ignore_errors=True)


def test_simulated_sites_run_on_both_nodes_of_an_existing_ray_cluster(
    ray_cluster: tuple[str, Path], tmp_path: Path
) -> None:
    address, temp = ray_cluster
    data = write_synthetic_lesions(
        tmp_path / "lesions.npz", n_train=120, n_val=20, n_test=40, image_size=16, seed=2
    )
    job = FederationJob.model_validate(
        {"rounds": 1, "min_sites": 4, "privacy": {"enabled": False},
         "secure_aggregation": {"enabled": False}}
    )  # fmt: skip
    settings = SimulationSettings(data=data, sites=4, ray_address=address)
    run_dir = tmp_path / "run"
    run_simulation_job(job, settings, run_dir, [])
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert sorted(s["site"] for s in metrics["sites"] if s["phase"] == "train") == [
        f"site-{k}" for k in range(4)
    ]
    # The sites' actors are the cluster's workers, one on each node (one CPU each).
    cluster_logs = temp / "session_latest" / "logs"
    actor_pids = [
        path.name.rsplit("-", 1)[1].removesuffix(".out")
        for path in cluster_logs.glob("worker-*.out")
        if ":actor_name:ClientAppActor" in path.read_text(errors="replace")
    ]
    nodes = {
        match.group(1)
        for pid in actor_pids
        for log in cluster_logs.glob(f"python-core-worker-*_{pid}.log")
        if (match := re.search(r"node_id=([0-9a-f]+)", log.read_text(errors="replace")))
    }
    assert len(actor_pids) >= 2 and len(nodes) == 2, (actor_pids, nodes)
