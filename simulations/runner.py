"""A whole simulation run: config, federated training, baselines and summary, in one run folder."""

import json
import logging
from pathlib import Path
from typing import Any

from common.config import JobConfig
from common.data.federated_split import split_across_sites
from common.data.loading import load_dataset
from common.errors import DataFormatError
from common.models import build_model
from common.tasks.registry import task_for
from simulations.baselines import run_baseline
from simulations.flower_simulation import run_flower_simulation
from simulations.summary import summarise_run

__all__ = ["run_simulation_job"]

logger = logging.getLogger(__name__)


def run_simulation_job(job: JobConfig, run_dir: Path, baselines: list[str]) -> dict[str, Any]:
    """Run federated training of ``job`` then each requested baseline; return the summary.

    Writes to ``run_dir``: config.json, sites.json (samples and label counts per site), the
    federated metrics files and global_model.pt, baselines.json, summary.json and summary.md.
    """
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.json").write_text(job.model_dump_json(indent=2), encoding="utf-8")
    splits = load_dataset(job.data, image_size=job.image_size, seed=job.seed)
    task = task_for(job.task)
    if task.name == "segmentation" and not splits.has_masks:
        raise DataFormatError(
            job.data,
            "has no segmentation masks: prepare NIfTI/MSD data or DICOM with DICOM SEG objects, "
            "or run the classification task",
        )
    # Fail fast, before Ray starts, on a model DP-SGD cannot train.
    output_names = task.output_names(splits)
    build_model(
        job.model, splits.in_channels, len(output_names), splits.image_size, job.privacy.enabled
    )
    sites = split_across_sites(splits, job.num_sites, job.partition_scheme, job.seed)
    _write_site_table(run_dir, splits.class_names, sites)
    logger.info(
        "dataset %s: %d train / %d val / %d test, %d classes; %d sites, partition %s",
        job.data,
        len(splits.train),
        len(splits.val),
        len(splits.test),
        splits.num_classes,
        job.num_sites,
        job.partition,
    )
    run_flower_simulation(job, run_dir, splits)
    results = {name: run_baseline(name, job, splits, sites) for name in baselines}
    (run_dir / "baselines.json").write_text(json.dumps(results, indent=2), encoding="utf-8")
    summary = summarise_run(run_dir, results, task.metric_names)
    logger.info("run folder: %s", run_dir)
    return summary


def _write_site_table(run_dir: Path, class_names: tuple[str, ...], sites: list[Any]) -> None:
    table = [
        {
            "site": site_id,
            "train": len(site.train),
            "val": len(site.val),
            "train_label_counts": {
                name: int((site.train.labels == k).sum()) for k, name in enumerate(class_names)
            },
        }
        for site_id, site in enumerate(sites)
    ]
    (run_dir / "sites.json").write_text(json.dumps(table, indent=2), encoding="utf-8")
