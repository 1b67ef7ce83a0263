"""A whole simulation run: sites' data, the job on Flower's Simulation Engine, baselines, summary.

The simulated hospitals run the very ServerApp and ClientApp a real federation runs: each site
gets a folder (its data, its privacy ledger and audit log) and the job's app folder is
submitted with `flwr run` to a SuperLink in simulation mode.
"""

import json
import logging
from pathlib import Path
from typing import Any

from common.config import is_segmentation
from common.data.arrays import DatasetSplits, ImageArrays
from common.data.federated_split import SiteData, split_across_sites
from common.data.loading import load_dataset
from common.data.npz_writer import write_npz
from common.data.partition import PartitionScheme
from common.data.preprocessing_contract import write_contract
from common.errors import ConfigError, DataFormatError
from common.federation_job import FederationJob, load_federation_job
from common.initial_weights import initial_state
from common.job_model import build_job_model
from common.simulation_environment import SITE_DATA_FILE, SimulationEnvironment, site_folder
from common.tasks.registry import task_for
from common.threshold_data import load_threshold_data
from server.job_app import JOB_FILE, write_job_app
from server.run_outcome import check_run_outcome
from server.server_app import CHECKPOINT_NAME
from simulations.baselines import run_baseline
from simulations.preflight_warnings import pooled_hospitals_warning, small_site_warnings
from simulations.simulation_engine import run_on_simulation_engine
from simulations.simulation_settings import SimulationSettings
from simulations.summary import summarise_run

__all__ = ["SETTINGS_FILE", "fit_job_to_data", "resume_simulation_job", "run_simulation_job"]

logger = logging.getLogger(__name__)

#: The simulation's settings, kept in the run folder (what `--resume` reads).
SETTINGS_FILE = "simulation.json"


def fit_job_to_data(job: FederationJob, splits: DatasetSplits) -> FederationJob:
    """The job with the data's shape and preprocessing contract (none for a plain .npz).

    Channels, output classes and their names, image size. A job file that declares a
    different number of channels or classes, or other preprocessing, is refused.
    """
    names = task_for(job.task).output_names(splits)
    shape = splits.image_size
    if len(shape) != len(job.spatial_shape):
        raise DataFormatError(
            splits.source,
            f"holds {len(shape)}D samples but task {job.task!r} trains on "
            f"{len(job.spatial_shape)}D ones (prepare --dims 3 for segmentation-3d)",
        )
    if len(set(shape)) != 1:
        raise DataFormatError(splits.source, f"images are {shape}: they must be square (cubic)")
    found = {"in_channels": splits.in_channels, "num_classes": len(names)}
    for key, value in found.items():
        if key in job.model_fields_set and getattr(job, key) != value:
            raise ConfigError(
                f"job {job.name}", f"{key} = {getattr(job, key)} but the data has {value}"
            )
    if job.preprocessing is not None:
        differing = job.preprocessing.differences(splits.preprocessing)
        if differing:
            raise ConfigError(
                f"job {job.name}",
                f"preprocessing differs from {splits.source}'s: " + "; ".join(differing),
            )
    update = {**found, "class_names": ",".join(names), "image_size": shape[0]}
    return job.model_copy(update={**update, "preprocessing": splits.preprocessing})


def _check_runnable(
    job: FederationJob, settings: SimulationSettings, splits: DatasetSplits
) -> None:
    if is_segmentation(job.task) and not splits.has_masks:
        raise DataFormatError(
            settings.data,
            "has no segmentation masks: prepare NIfTI/MSD data or DICOM with DICOM SEG objects, "
            "or run the classification task",
        )
    if job.min_sites > settings.sites:
        raise ConfigError(
            f"job {job.name}",
            f"min_sites = {job.min_sites} but the simulation has {settings.sites} sites",
        )
    pooled = pooled_hospitals_warning(settings, splits)
    if pooled is not None:
        logger.warning("%s", pooled)
    # Fail fast, before any process starts, on a model DP-SGD cannot train.
    build_job_model(job)
    initial_state(job)  # and on initial weights that do not fit it
    load_threshold_data(job)  # and on threshold data that does not


def _write_sites(run_dir: Path, sites: list[SiteData], splits: DatasetSplits) -> Path:
    """One folder per site with its own data (train and validation; no test set)."""
    sites_dir = run_dir / "sites"
    empty = splits.test.subset(splits.test.labels[:0])
    for index, site in enumerate(sites):
        folder = site_folder(sites_dir, index)
        write_npz(
            folder / SITE_DATA_FILE,
            {"train": site.train, "val": site.val, "test": empty},
            splits.class_names,
            splits.segment_names,
        )
        if splits.preprocessing is not None:  # as a hospital's cache carries it
            write_contract(folder, splits.preprocessing)
    return sites_dir


def _write_site_table(run_dir: Path, class_names: tuple[str, ...], sites: list[SiteData]) -> None:
    def counts(part: ImageArrays) -> dict[str, int]:
        return {name: int((part.labels == k).sum()) for k, name in enumerate(class_names)}

    table = [
        {"site": f"site-{index}", "train": len(site.train), "val": len(site.val),
         "train_label_counts": counts(site.train)}
        for index, site in enumerate(sites)
    ]  # fmt: skip
    (run_dir / "sites.json").write_text(json.dumps(table, indent=2), encoding="utf-8")


def _run_federation(
    job: FederationJob, settings: SimulationSettings, run_dir: Path, resume: bool, verbose: bool
) -> None:
    environment = SimulationEnvironment(
        sites_dir=run_dir / "sites",
        test_data=str(settings.data),
        site_max_epsilon=settings.site_budget or job.privacy.target_epsilon,
        site_delta=job.privacy.target_delta,
        fixed_seeds=True,
        drop=settings.drop,
        hostile=settings.hostile,
    )
    app_dir = write_job_app(run_dir, job, resume, environment)
    code = run_on_simulation_engine(
        app_dir, run_dir, settings.sites, settings.cpus_per_site, verbose, settings.ray_address
    )
    metrics = run_dir / "metrics.json"
    done = (
        max(map(int, json.loads(metrics.read_text())["global"]), default=0)
        if metrics.is_file()
        else 0
    )
    check_run_outcome(
        run_dir, job.name, job.rounds, done, code, f"medfed-sim run --resume {run_dir}"
    )


def run_simulation_job(
    job: FederationJob,
    settings: SimulationSettings,
    run_dir: Path,
    baselines: list[str],
    verbose: bool = False,
) -> dict[str, Any]:
    """Run federated training of ``job`` then each requested baseline; return the summary.

    Writes to ``run_dir``: job.toml and simulation.json, sites.json (samples and label counts
    per site), sites/ (each site's data, ledger and audit log), the metrics files and
    global_model.pt, the baselines' models beside it (pooled_model.pt,
    local_model_site-K.pt), baselines.json, summary.json and summary.md.
    """
    run_dir.mkdir(parents=True, exist_ok=True)
    splits = load_dataset(settings.data, image_size=job.image_size, seed=job.seed)
    job = fit_job_to_data(job, splits)
    _check_runnable(job, settings, splits)
    (run_dir / SETTINGS_FILE).write_text(settings.model_dump_json(indent=2), encoding="utf-8")
    sites = split_across_sites(
        splits, settings.sites, PartitionScheme.parse(settings.partition), job.seed
    )
    for warning in small_site_warnings(job, sites):
        logger.warning("%s", warning)
    _write_site_table(run_dir, splits.class_names, sites)
    _write_sites(run_dir, sites, splits)
    logger.info(
        "dataset %s: %d train / %d val / %d test, %d classes; %d sites, partition %s",
        settings.data, len(splits.train), len(splits.val), len(splits.test),
        splits.num_classes, settings.sites, settings.partition,
    )  # fmt: skip
    _run_federation(job, settings, run_dir, resume=False, verbose=verbose)
    results = {name: run_baseline(name, job, splits, sites, run_dir) for name in baselines}
    (run_dir / "baselines.json").write_text(json.dumps(results, indent=2), encoding="utf-8")
    summary = summarise_run(run_dir, results, task_for(job.task).metric_names)
    logger.info("run folder: %s", run_dir)
    return summary


def resume_simulation_job(run_dir: Path, verbose: bool = False) -> dict[str, Any]:
    """Continue an interrupted simulation after its last completed round (no baselines)."""
    if not (run_dir / JOB_FILE).is_file() or not (run_dir / SETTINGS_FILE).is_file():
        raise ConfigError(str(run_dir), f"not a simulation's run folder (no {JOB_FILE})")
    if not (run_dir / CHECKPOINT_NAME).is_file():
        raise ConfigError(str(run_dir), "no completed round to resume from: run it again instead")
    job = load_federation_job(run_dir / JOB_FILE)
    settings = SimulationSettings.model_validate_json((run_dir / SETTINGS_FILE).read_text())
    _run_federation(job, settings, run_dir, resume=True, verbose=verbose)
    baselines_file = run_dir / "baselines.json"
    results = json.loads(baselines_file.read_text()) if baselines_file.is_file() else {}
    return summarise_run(run_dir, results, task_for(job.task).metric_names)
