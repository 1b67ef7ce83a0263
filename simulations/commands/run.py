"""`medfed-sim run`: the federated job on simulated hospitals, with pooled and local baselines.

The job's options are generated from the job model (common.federation_job) and the
simulation's from :class:`~simulations.simulation_settings.SimulationSettings`: no option
repeats a key or a default by hand.
"""

from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any

import typer

from common.cli_support import (
    FormatOption,
    OutputFormat,
    configure_logging,
    emit_json,
    exit_on_sigterm,
    user_errors,
)
from common.config_files import validate_model
from common.errors import ConfigError
from common.federation_job import FederationJob, load_federation_job, unflatten
from common.job_options import job_options, with_job_options
from common.run_folders import claim_run_folder, new_run_folder
from simulations.baselines import BASELINES
from simulations.runner import resume_simulation_job, run_simulation_job
from simulations.simulation_settings import SimulationSettings
from simulations.summary import summary_table

__all__ = ["JOB_OPTIONS", "SIMULATION_OPTIONS", "build_job", "run"]

JOB_OPTIONS = job_options(FederationJob)
SIMULATION_OPTIONS = job_options(SimulationSettings)


def build_job(config: Path | None, overrides: Mapping[str, Any]) -> FederationJob:
    """The job from an optional job.toml with the command-line options laid over it."""
    if config is not None:
        return load_federation_job(config, overrides)
    return validate_model(FederationJob, unflatten(dict(overrides)), "command line")


def build_settings(overrides: Mapping[str, Any]) -> SimulationSettings:
    """The simulation's settings from its command-line options."""
    if "data" not in overrides:
        raise ConfigError("command line", "give --data PATH (the dataset to make hospitals of)")
    return validate_model(SimulationSettings, dict(overrides), "command line")


@with_job_options(SIMULATION_OPTIONS, argument="simulation", panel="Simulation")
@with_job_options(JOB_OPTIONS)
def run(
    job_overrides: Mapping[str, Any],
    simulation: Mapping[str, Any],
    config: Annotated[
        Path | None,
        typer.Option(
            help="job.toml (the same file `medfed-server run` takes); options override it."
        ),
    ] = None,
    resume: Annotated[
        Path | None,
        typer.Option(help="Continue this run folder's simulation after its last completed round."),
    ] = None,
    baseline: Annotated[
        list[str] | None,
        typer.Option(help="Also train 'pooled' and/or 'local' on the same split (repeatable)."),
    ] = None,
    out: Annotated[
        Path | None, typer.Option(help="Run folder. [default: runs/sim-TIMESTAMP]")
    ] = None,
    output: FormatOption = OutputFormat.TEXT,
    verbose: Annotated[bool, typer.Option(help="Show Flower's and Ray's own logs.")] = False,
) -> None:
    """Simulate hospitals on this machine with Flower's Simulation Engine and write a run folder.

    With --format json stdout gets summary.json's object (rounds, metric_names, test_metrics
    per approach) and run_dir.
    """
    configure_logging(verbose)
    with user_errors(output), exit_on_sigterm():
        if resume is not None:
            summary = resume_simulation_job(resume.resolve(), verbose)
            run_dir = resume
        else:
            job = build_job(config, job_overrides)
            settings = build_settings(
                {**simulation, "data": Path(simulation["data"]).resolve()}
                if "data" in simulation
                else simulation
            )
            chosen = list(dict.fromkeys(baseline or []))
            unknown = [b for b in chosen if b not in BASELINES]
            if unknown:
                raise ConfigError("--baseline", f"unknown {unknown}; choose from {list(BASELINES)}")
            run_dir = (
                claim_run_folder("--out", out) if out else new_run_folder(Path("runs"), job.name)
            )
            summary = run_simulation_job(job, settings, run_dir.resolve(), chosen, verbose)
    if output is OutputFormat.JSON:
        emit_json({**summary, "run_dir": str(run_dir)})
        return
    typer.echo(f"\nTest-set results after {summary['rounds']} rounds:\n")
    typer.echo(summary_table(summary["test_metrics"], tuple(summary["metric_names"])))
    typer.echo(f"\nRun folder: {run_dir}")
