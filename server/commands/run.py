"""`medfed-server run job.toml`: launch a training job on the federation and stream its progress."""

import json
import subprocess
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from common.checkpoint import load_checkpoint
from common.cli_support import configure_logging, user_errors
from common.errors import MedfedError
from common.federation_job import load_federation_job
from common.flower_processes import flower_command, flower_environment
from server.commands.options import (
    DEFAULT_STATE,
    StateOption,
    VerboseOption,
    running_coordinator,
)
from server.coordinator import CONNECTION
from server.deployment_app import CHECKPOINT_NAME
from server.job_app import write_job_app

__all__ = ["run"]


def run(
    job_file: Annotated[Path, typer.Argument(help="job.toml describing the training job.")],
    state: StateOption = DEFAULT_STATE,
    verbose: VerboseOption = False,
) -> None:
    """Submit the job to the local SuperLink, stream its log, and check the final model."""
    configure_logging(verbose)
    console = Console()
    with user_errors():
        job = load_federation_job(job_file)
        paths = running_coordinator(state)
        run_dir = paths.runs / f"{time.strftime('%Y%m%d-%H%M%S')}-{job.name}"
        app_dir = write_job_app(run_dir, job)
        console.print(f"job {job.name}: {job.rounds} round(s), run folder {run_dir}")
        command = [flower_command("flwr"), "run", str(app_dir), CONNECTION, "--stream"]
        with (run_dir / "run.log").open("w", encoding="utf-8") as log:
            process = subprocess.Popen(
                command,
                env=flower_environment(paths.flwr_home),
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                cwd=run_dir,
            )
            assert process.stdout is not None
            for line in process.stdout:
                log.write(line)
                log.flush()  # the log is readable while the job runs
                console.print(line.rstrip(), highlight=False, markup=False)
            code = process.wait()
        checkpoint = run_dir / CHECKPOINT_NAME
        done = load_checkpoint(checkpoint)["round"] if checkpoint.is_file() else 0
        if code != 0 or done != job.rounds:
            raise MedfedError(
                f"job {job.name} ended after {done}/{job.rounds} round(s) (flwr exit {code}); "
                f"see {run_dir / 'run.log'}"
            )
        metrics = json.loads((run_dir / "metrics.json").read_text(encoding="utf-8"))
        last = metrics["federated"]["evaluate"].get(str(job.rounds), {})
        shown = ", ".join(f"{k}={v:.3f}" for k, v in last.items() if isinstance(v, float))
        console.print(f"job {job.name} done: {done} rounds; site validation {shown}")
        console.print(f"global model: {checkpoint}")
