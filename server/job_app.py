"""The Flower App folder a job is submitted as: a pyproject naming medfed's apps and the job.

The same folder runs on a real federation (`medfed-server run`) and on Flower's Simulation
Engine (`medfed-sim run`, which adds the ``simulation`` table). The FAB holds no code: sites run
the medfed they installed (runtime dependency installation is off everywhere), so the
coordinator cannot push code to a hospital through a job.
"""

from pathlib import Path
from typing import Any

import tomli_w

from common.federation_job import (
    RESUME_KEY,
    RUN_DIR_KEY,
    SIMULATION_KEY,
    FederationJob,
)
from common.simulation_environment import SimulationEnvironment

__all__ = ["CLIENT_APP", "JOB_FILE", "SERVER_APP", "app_config", "write_job_app"]

SERVER_APP = "server.server_app:app"
CLIENT_APP = "client.client_app:app"
#: The job as submitted, kept in its run folder (what `--resume` reads).
JOB_FILE = "job.toml"


def app_config(
    job: FederationJob,
    run_dir: Path | None,
    resume: bool = False,
    simulation: SimulationEnvironment | None = None,
) -> dict[str, Any]:
    """The run config tables: the job's, then where it runs."""
    config: dict[str, Any] = {**job.to_nested(), RESUME_KEY: resume}
    if run_dir is not None:
        config[RUN_DIR_KEY] = str(run_dir.resolve())
    if simulation is not None:
        config[SIMULATION_KEY] = simulation.model_dump(mode="json")
    return config


def write_job_app(
    run_dir: Path,
    job: FederationJob,
    resume: bool = False,
    simulation: SimulationEnvironment | None = None,
) -> Path:
    """Write ``run_dir/app/pyproject.toml`` (and the job as ``run_dir/job.toml``) for ``job``.

    With ``resume`` the ServerApp continues from the run folder's checkpoint. Returns the app
    folder.
    """
    app_dir = run_dir / "app"
    app_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / JOB_FILE).write_text(tomli_w.dumps(job.to_nested()), encoding="utf-8")
    pyproject = {
        "project": {
            "name": f"medfed-{job.name}".lower(),
            "version": "1.0.0",
            "description": f"medfed training job {job.name}",
            "license": "Apache-2.0",
            "dependencies": [],
        },
        "tool": {
            "flwr": {
                "app": {
                    "publisher": "medfed",
                    "components": {"serverapp": SERVER_APP, "clientapp": CLIENT_APP},
                    "config": app_config(job, run_dir, resume, simulation),
                }
            }
        },
    }
    (app_dir / "pyproject.toml").write_text(tomli_w.dumps(pyproject), encoding="utf-8")
    return app_dir
