"""`medfed-sim pretrain`: a job's network trained on public data, saved as initial weights."""

from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any

import typer

from common.checkpoint import save_checkpoint
from common.cli_support import FormatOption, OutputFormat, configure_logging, emit_json, user_errors
from common.cli_values import check_output_file
from common.errors import ConfigError
from common.job_options import with_job_options
from simulations.commands.run import JOB_OPTIONS, build_job
from simulations.pretraining import pretrain as pretrain_network

__all__ = ["pretrain"]


@with_job_options(JOB_OPTIONS)
def pretrain(
    job_overrides: Mapping[str, Any],
    data: Annotated[
        Path,
        typer.Option(help="Public data, never a hospital's: any dataset `medfed-sim run` reads."),
    ],
    out: Annotated[Path, typer.Option(help="The checkpoint to write (e.g. weights.pt).")],
    epochs: Annotated[int, typer.Option(help="Training epochs over the public data.")] = 10,
    config: Annotated[
        Path | None,
        typer.Option(help="job.toml of the job the weights are for; options override it."),
    ] = None,
    output: FormatOption = OutputFormat.TEXT,
) -> None:
    """Train the job's network on public data without DP and write it as a medfed checkpoint.

    Give the checkpoint to the job as `--initial-weights` (model.initial_weights): the
    federation then starts from it. The network is built as the job builds it (model, norm,
    DP's layer rules); the public data sets the channels, classes and image size.
    """
    configure_logging(False)
    with user_errors(output):
        if epochs < 1:
            raise ConfigError("--epochs", f"{epochs} must be a whole number >= 1")
        check_output_file("--out", out)  # before the training, not after it
        job = build_job(config, job_overrides)
        if job.model.initial_weights:
            raise ConfigError("--initial-weights", "pretraining starts from seeded weights")
        result = pretrain_network(job, data.resolve(), epochs)
        save_checkpoint(out, result.state_dict, result.job, 0, result.metrics)
    summary = {
        "out": str(out),
        "data": str(data),
        "epochs": epochs,
        "model": result.job.model.name,
        "class_counts": result.class_counts,
        "held_out_metrics": result.metrics,
    }
    if output is OutputFormat.JSON:
        emit_json(summary)
        return
    counts = ", ".join(f"{name} {n}" for name, n in result.class_counts.items())
    shown = ", ".join(f"{key} {value:.3f}" for key, value in result.metrics.items())
    typer.echo(f"public training images: {counts}")
    typer.echo(f"after {epochs} epochs, on the public held-out split: {shown}")
    typer.echo(f"wrote {out}: give it to a job as --initial-weights {out}")
