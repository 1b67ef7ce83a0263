"""`medfed-sim run`: federated training of simulated hospitals, with pooled and local baselines."""

import time
from pathlib import Path
from typing import Annotated, Any

import typer

from common.cli_support import configure_logging, user_errors
from common.config import JobConfig, load_job_config, validate_job_config
from common.errors import ConfigError
from simulations.baselines import BASELINES
from simulations.runner import run_simulation_job
from simulations.summary import summary_table

__all__ = ["run"]

# CLI option name -> dotted JobConfig key. Options left unset keep the config file's value.
_OVERRIDES = {
    "data": "data",
    "task": "task",
    "sites": "num_sites",
    "rounds": "rounds",
    "partition": "partition",
    "seed": "seed",
    "image_size": "image_size",
    "local_epochs": "train.local_epochs",
    "batch_size": "train.batch_size",
    "lr": "train.learning_rate",
    "optimizer": "train.optimizer",
    "model": "model.name",
    "norm": "model.norm",
    "strategy": "strategy.name",
    "proximal_mu": "strategy.proximal_mu",
    "server_lr": "strategy.server_learning_rate",
    "dp": "privacy.enabled",
    "dp_epsilon": "privacy.target_epsilon",
    "dp_delta": "privacy.target_delta",
    "max_grad_norm": "privacy.max_grad_norm",
    "accountant": "privacy.accountant",
}


def _nested(flat: dict[str, Any]) -> dict[str, Any]:
    nested: dict[str, Any] = {}
    for dotted, value in flat.items():
        section, _, field = dotted.rpartition(".")
        (nested.setdefault(section, {}) if section else nested)[field] = value
    return nested


def build_job(config: Path | None, options: dict[str, Any]) -> JobConfig:
    """The JobConfig from an optional TOML file with the command-line options laid over it."""
    overrides = {_OVERRIDES[k]: v for k, v in options.items() if v is not None}
    if "data" in overrides:
        overrides["data"] = str(Path(overrides["data"]).resolve())
    if config is not None:
        return load_job_config(config, overrides)
    if "data" not in overrides:
        raise ConfigError("command line", "give --data PATH (or --config FILE with a data key)")
    return validate_job_config(_nested(overrides), "command line")


def run(
    data: Annotated[
        Path | None,
        typer.Option(help="Dataset: a MedMNIST-style .npz, or a folder of images with labels.csv."),
    ] = None,
    config: Annotated[
        Path | None, typer.Option(help="Job TOML file; command-line options override it.")
    ] = None,
    task: Annotated[
        str | None,
        typer.Option(
            help="classification (one label per image) or segmentation (a mask per image: "
            "needs data with masks). [default: classification]"
        ),
    ] = None,
    sites: Annotated[
        int | None, typer.Option(help="Number of simulated hospitals. [default: 3]")
    ] = None,
    rounds: Annotated[int | None, typer.Option(help="Federated rounds. [default: 3]")] = None,
    partition: Annotated[
        str | None,
        typer.Option(
            help="iid, dirichlet:ALPHA (label skew) or quantity:ALPHA (size skew). [default: iid]"
        ),
    ] = None,
    seed: Annotated[
        int | None, typer.Option(help="Seed for partitioning and training. [default: 0]")
    ] = None,
    local_epochs: Annotated[
        int | None, typer.Option(help="Local epochs per round. [default: 1]")
    ] = None,
    batch_size: Annotated[
        int | None,
        typer.Option(help="Batch size (expected size under DP Poisson sampling). [default: 32]"),
    ] = None,
    lr: Annotated[float | None, typer.Option(help="Local learning rate. [default: 0.001]")] = None,
    optimizer: Annotated[str | None, typer.Option(help="adam or sgd. [default: adam]")] = None,
    model: Annotated[
        str | None,
        typer.Option(
            help="classification: cnn, resnet18 or densenet121; segmentation: basicunet or unet "
            "(MONAI). [default: cnn / basicunet]"
        ),
    ] = None,
    norm: Annotated[
        str | None,
        typer.Option(help="group, instance or batch (batch is refused with DP). [default: group]"),
    ] = None,
    image_size: Annotated[
        int | None, typer.Option(help="Resize folder images to this size. [default: 64]")
    ] = None,
    strategy: Annotated[
        str | None, typer.Option(help="fedavg, fedprox or fedadam. [default: fedavg]")
    ] = None,
    proximal_mu: Annotated[float | None, typer.Option(help="FedProx mu. [default: 0.01]")] = None,
    server_lr: Annotated[
        float | None, typer.Option(help="FedAdam server learning rate. [default: 0.01]")
    ] = None,
    dp: Annotated[
        bool | None,
        typer.Option(
            "--dp/--no-dp", help="Differentially private training at every site. [default: on]"
        ),
    ] = None,
    dp_epsilon: Annotated[
        float | None, typer.Option(help="Target epsilon per site over the whole job. [default: 8]")
    ] = None,
    dp_delta: Annotated[float | None, typer.Option(help="Target delta. [default: 1e-5]")] = None,
    max_grad_norm: Annotated[
        float | None, typer.Option(help="Per-sample gradient clipping norm. [default: 1.0]")
    ] = None,
    accountant: Annotated[str | None, typer.Option(help="rdp or prv. [default: rdp]")] = None,
    baseline: Annotated[
        list[str] | None,
        typer.Option(help="Also train 'pooled' and/or 'local' on the same split (repeatable)."),
    ] = None,
    out: Annotated[
        Path | None, typer.Option(help="Run folder. [default: runs/sim-TIMESTAMP]")
    ] = None,
    verbose: Annotated[bool, typer.Option(help="Show Flower's and Ray's own logs.")] = False,
) -> None:
    """Simulate hospitals on this machine with Flower's Simulation Engine and write a run folder."""
    configure_logging(verbose)
    options = {k: v for k, v in locals().items() if k in _OVERRIDES}
    with user_errors():
        job = build_job(config, options)
        chosen = list(dict.fromkeys(baseline or []))
        unknown = [b for b in chosen if b not in BASELINES]
        if unknown:
            raise ConfigError("--baseline", f"unknown {unknown}; choose from {list(BASELINES)}")
        run_dir = out or Path("runs") / time.strftime("sim-%Y%m%d-%H%M%S")
        summary = run_simulation_job(job, run_dir.resolve(), chosen)
    typer.echo(f"\nTest-set results after {summary['rounds']} rounds:\n")
    typer.echo(summary_table(summary["test_metrics"], tuple(summary["metric_names"])))
    typer.echo(f"\nRun folder: {run_dir}")
