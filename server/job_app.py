"""The Flower App folder `medfed-server run` submits: a pyproject naming medfed's apps and the job.

The FAB holds no code: sites run the medfed they installed (runtime dependency installation
is off everywhere), so the coordinator cannot push code to a hospital through a job.
"""

from pathlib import Path

import tomli_w

from common.federation_job import RESUME_KEY, RUN_DIR_KEY, FederationJob

__all__ = ["CLIENT_APP", "JOB_FILE", "SERVER_APP", "write_job_app"]

SERVER_APP = "server.deployment_app:app"
CLIENT_APP = "client.deployment_app:app"
#: The job as submitted, kept in its run folder (what `--resume` reads).
JOB_FILE = "job.toml"


def write_job_app(run_dir: Path, job: FederationJob, resume: bool = False) -> Path:
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
                    "config": {
                        **job.to_nested(),
                        RUN_DIR_KEY: str(run_dir.resolve()),
                        RESUME_KEY: resume,
                    },
                }
            }
        },
    }
    (app_dir / "pyproject.toml").write_text(tomli_w.dumps(pyproject), encoding="utf-8")
    return app_dir
