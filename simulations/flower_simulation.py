"""Run a federated job on Flower's Simulation Engine (Ray backend), one SuperNode per site."""

import logging
import os
import shutil
import tempfile
from pathlib import Path

from flwr.clientapp import ClientApp
from flwr.serverapp import ServerApp
from flwr.simulation import run_simulation

from client.client_app import create_client_app
from common.config import JobConfig
from common.data.arrays import DatasetSplits
from server.server_app import create_server_app

__all__ = ["run_apps_in_simulation", "run_flower_simulation"]

logger = logging.getLogger(__name__)


def run_flower_simulation(
    job: JobConfig, run_dir: Path, splits: DatasetSplits | None = None, cpus_per_site: float = 1.0
) -> None:
    """Run ``job`` with ``job.num_sites`` simulated sites; metrics and model land in ``run_dir``.

    ``splits``, the job's dataset when the caller has read it already, spares the ServerApp
    (which runs in this process) a second read.

    Ray gets a short private temporary folder (its socket paths must stay under 107 bytes),
    removed afterwards; telemetry is switched off.
    """
    run_apps_in_simulation(
        create_server_app(job, run_dir, splits),
        create_client_app(job),
        job.num_sites,
        cpus_per_site,
    )


def run_apps_in_simulation(
    server_app: ServerApp, client_app: ClientApp, num_sites: int, cpus_per_site: float = 1.0
) -> None:
    """Run a ServerApp and ClientApp pair with ``num_sites`` simulated SuperNodes."""
    os.environ["FLWR_TELEMETRY_ENABLED"] = "0"
    os.environ.setdefault("RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", "0")  # no GPUs: keep Ray quiet
    ray_tmp = tempfile.mkdtemp(prefix="medfed-ray-")
    previous = os.environ.get("RAY_TMPDIR")
    os.environ["RAY_TMPDIR"] = ray_tmp
    backend_config = {
        "client_resources": {"num_cpus": cpus_per_site, "num_gpus": 0.0},
        "init_args": {"num_cpus": os.cpu_count() or 1, "include_dashboard": False},
    }
    try:
        run_simulation(
            server_app=server_app,
            client_app=client_app,
            num_supernodes=num_sites,
            backend_config=backend_config,  # type: ignore[arg-type]
        )
    finally:
        if previous is None:
            os.environ.pop("RAY_TMPDIR", None)
        else:
            os.environ["RAY_TMPDIR"] = previous
        shutil.rmtree(ray_tmp, ignore_errors=True)
