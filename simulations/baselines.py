"""Baselines on the same split: pooled (all sites' data together) and local (each site alone)."""

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from common.checkpoint import save_checkpoint
from common.data.arrays import DatasetSplits, ImageArrays
from common.data.federated_split import SiteData
from common.federation_job import FederationJob
from common.initial_weights import initial_state
from common.local_training import train_local_round
from common.models import build_model
from common.privacy.accounting import PrivacyState
from common.tasks import classification
from common.tasks.registry import task_for
from common.threshold_data import load_threshold_data

__all__ = ["BASELINES", "baseline_model_path", "run_baseline"]

logger = logging.getLogger(__name__)

BASELINES = ("pooled", "local")


def baseline_model_path(run_dir: Path, name: str, site: int | None = None) -> Path:
    """Where a baseline's model is saved, beside the federated global_model.pt.

    ``pooled_model.pt``, and ``local_model_site-K.pt`` for each site K of the local baseline.
    """
    return run_dir / (f"{name}_model.pt" if site is None else f"{name}_model_site-{site}.pt")


def _train_alone(
    job: FederationJob,
    train: ImageArrays,
    val: ImageArrays,
    splits: DatasetSplits,
    seed: int,
    label: str,
    model_path: Path,
) -> list[dict[str, Any]]:
    """Train one model on ``train`` for as many rounds x local epochs as the federation did.

    The same DP settings apply (noise calibrated for the same epsilon over the same number of
    epochs), so a baseline differs from the federated run only in where the data sits.
    Returns per-round metrics on the global test set; for binary classification at the
    threshold chosen on ``val`` (the validation data the baseline's sites hold), or on the job's
    threshold data where it names some, as the federation chooses its own. The trained model is
    saved to ``model_path`` as a checkpoint ``medfed predict`` reads (the federated job, hence
    its preprocessing contract, and the last round's test metrics).
    """
    torch.manual_seed(job.seed)
    task = task_for(job.task)
    names = task.output_names(splits)
    model = build_model(
        job.model, splits.in_channels, len(names), splits.image_size, job.privacy.enabled
    )
    start = initial_state(job)  # the federation's starting point, for a fair comparison
    if start is not None:
        model.load_state_dict(start)
    privacy: PrivacyState | None = None
    threshold_data = load_threshold_data(job)
    choose_on = val if threshold_data is None else threshold_data
    history = []
    for server_round in range(1, job.rounds + 1):
        update = train_local_round(
            model, train, job, seed=seed * 1_009 + server_round, privacy_state=privacy
        )
        privacy = update.privacy_state
        metrics = (
            classification.evaluate_at_validation_threshold(model, choose_on, splits.test)
            if job.task == "classification"
            else task.evaluate(model, splits.test, names)
        )
        row: dict[str, Any] = {"round": server_round, "train-loss": update.loss, **metrics}
        if update.epsilon is not None:
            row["epsilon"] = update.epsilon
        history.append(row)
        logger.info(
            "%s baseline round %d/%d: %s=%.3f loss=%.3f",
            label,
            server_round,
            job.rounds,
            task.headline,
            metrics[task.headline],
            metrics["loss"],
        )
    last = {k: float(v) for k, v in history[-1].items() if isinstance(v, int | float)}
    save_checkpoint(model_path, model.state_dict(), job, job.rounds, last)
    return history


def run_baseline(
    name: str, job: FederationJob, splits: DatasetSplits, sites: list[SiteData], run_dir: Path
) -> dict[str, Any]:
    """Run baseline ``name`` ('pooled' or 'local'); returns its per-round test metrics.

    Each model trained is saved in ``run_dir`` (:func:`baseline_model_path`).
    """
    runners: dict[str, Callable[[], dict[str, Any]]] = {
        "pooled": lambda: {
            "rounds": _train_alone(
                job,
                ImageArrays.concatenate([s.train for s in sites]),
                ImageArrays.concatenate([s.val for s in sites]),
                splits,
                job.seed,
                "pooled",
                baseline_model_path(run_dir, "pooled"),
            )
        },
        "local": lambda: {
            "sites": {
                str(site_id): _train_alone(
                    job,
                    site.train,
                    site.val,
                    splits,
                    job.seed + 1 + site_id,
                    f"local site {site_id}",
                    baseline_model_path(run_dir, "local", site_id),
                )
                for site_id, site in enumerate(sites)
            }
        },
    }
    if name not in runners:
        raise ValueError(f"unknown baseline {name!r}; choose from {', '.join(BASELINES)}")
    return runners[name]()
