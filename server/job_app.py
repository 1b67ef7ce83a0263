"""The Flower App folder `medfed-server run` submits: a pyproject naming medfed's apps and the job.

The FAB holds no code: sites run the medfed they installed (runtime dependency installation
is off everywhere), so the coordinator cannot push code to a hospital through a job.
"""

from pathlib import Path

import tomli_w

from common.federation_job import RUN_DIR_KEY, FederationJob

__all__ = ["SERVER_APP", "CLIENT_APP", "write_job_app"]

SERVER_APP = "server.deployment_app:app"
CLIENT_APP = "client.deployment_app:app"


def write_job_app(run_dir: Path, job: FederationJob) -> Path:
    """Write ``run_dir/app/pyproject.toml`` for ``job``; returns the app folder."""
    app_dir = run_dir / "app"
    app_dir.mkdir(parents=True, exist_ok=True)
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
                    "config": {**job.to_nested(), RUN_DIR_KEY: str(run_dir.resolve())},
                }
            }
        },
    }
    (app_dir / "pyproject.toml").write_text(tomli_w.dumps(pyproject), encoding="utf-8")
    return app_dir
