"""`medfed-server run job.toml`: launch a training job on the federation and stream its progress.

`medfed-server run --resume RUN_DIR` continues an interrupted job from its last completed round.
"""

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from common.checkpoint import load_checkpoint
from common.cli_support import (
    FormatOption,
    OutputFormat,
    configure_logging,
    emit_json,
    exit_on_sigterm,
    user_errors,
)
from common.errors import ConfigError
from common.federation_job import FederationJob, load_federation_job
from common.flower_processes import flower_command, flower_environment, stream_to_log
from common.job_model import build_job_model
from common.run_folders import new_run_folder
from common.threshold_data import load_threshold_data
from server.commands.options import (
    DEFAULT_STATE,
    StateOption,
    VerboseOption,
    running_coordinator,
)
from server.coordinator import CONNECTION, CoordinatorPaths, online_sites
from server.job_app import JOB_FILE, write_job_app
from server.run_outcome import METRICS_FILE, check_run_outcome
from server.server_app import CHECKPOINT_NAME

__all__ = ["run"]


def _completed_rounds(run_dir: Path) -> int:
    checkpoint = run_dir / CHECKPOINT_NAME
    return int(load_checkpoint(checkpoint)["round"]) if checkpoint.is_file() else 0


def _stream(app_dir: Path, paths: CoordinatorPaths, log_file: Path, console: Console) -> int:
    """`flwr run` the app against the coordinator's SuperLink, echoing and logging its output."""
    command = [flower_command("flwr"), "run", str(app_dir), CONNECTION, "--stream"]

    def echo(line: str) -> None:
        console.print(line.rstrip(), highlight=False, markup=False)

    env = flower_environment(paths.flwr_home)
    return stream_to_log(command, env, app_dir.parent, log_file, echo)


def _resumable(run_dir: Path) -> FederationJob:
    if not (run_dir / JOB_FILE).is_file():
        raise ConfigError(str(run_dir), f"not a job's run folder (no {JOB_FILE})")
    if _completed_rounds(run_dir) == 0:
        raise ConfigError(
            str(run_dir), "no completed round to resume from: run the job again instead"
        )
    return load_federation_job(run_dir / JOB_FILE)


def run(
    job_file: Annotated[
        Path | None, typer.Argument(help="job.toml describing the training job.")
    ] = None,
    resume: Annotated[
        Path | None,
        typer.Option(help="Continue this run folder's job after its last completed round."),
    ] = None,
    state: StateOption = DEFAULT_STATE,
    output: FormatOption = OutputFormat.TEXT,
    verbose: VerboseOption = False,
) -> None:
    """Submit the job to the local SuperLink, stream its log, and check the final model.

    With --format json the log goes to stderr and stdout gets one object: job, run_dir,
    rounds, global_model, site_validation (the last round's metrics over the sites).
    """
    configure_logging(verbose)
    console = Console(stderr=output is OutputFormat.JSON)
    with user_errors(output), exit_on_sigterm():
        if (job_file is None) == (resume is None):
            raise ConfigError("medfed-server run", "give a job.toml or --resume RUN_DIR")
        if resume is not None:
            run_dir = resume.resolve()
            job = _resumable(run_dir)
            build_job_model(job)  # refused here, before the coordinator is asked anything
            load_threshold_data(job)  # and threshold data that does not fit it
            paths = running_coordinator(state)
            done = _completed_rounds(run_dir)
            console.print(f"job {job.name}: resuming after round {done}/{job.rounds}")
        else:
            assert job_file is not None
            job = load_federation_job(job_file)
            build_job_model(job)  # as medfed-sim run: a model DP-SGD cannot train is refused
            load_threshold_data(job)
            paths = running_coordinator(state)
            run_dir = new_run_folder(paths.runs, job.name)
            console.print(f"job {job.name}: {job.rounds} round(s), run folder {run_dir}")
        online = online_sites(paths)
        if online < job.min_sites:
            console.print(
                f"{online} of the {job.min_sites} sites this job needs are online: it starts "
                "when enough connect (`medfed-server status` lists them)"
            )
        app_dir = write_job_app(run_dir, job, resume=resume is not None)
        code = _stream(app_dir, paths, run_dir / "run.log", console)
        done = _completed_rounds(run_dir)
        check_run_outcome(
            run_dir, job.name, job.rounds, done, code, f"medfed-server run --resume {run_dir}"
        )
        metrics = json.loads((run_dir / METRICS_FILE).read_text(encoding="utf-8"))
        last = metrics["federated"]["evaluate"].get(str(job.rounds), {})
    if output is OutputFormat.JSON:
        emit_json(
            {
                "job": job.name,
                "run_dir": str(run_dir),
                "rounds": done,
                "global_model": str(run_dir / CHECKPOINT_NAME),
                "site_validation": last,
            }
        )
        return
    shown = ", ".join(f"{k}={v:.3f}" for k, v in last.items() if isinstance(v, float))
    console.print(f"job {job.name} done: {done} rounds; site validation {shown}")
    console.print(f"global model: {run_dir / CHECKPOINT_NAME}")
