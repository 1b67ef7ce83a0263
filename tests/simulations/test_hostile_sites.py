"""Hostile simulated sites on Flower's Simulation Engine: the job survives, the model stays sane.

The real ServerApp and ClientApp; a site is made hostile through the simulation-only switch
(``SimulationSettings.hostile``), applied after its own checks as a modified client would.
Every run: 6 sites, 1 round, no DP, fixed seeds, so an honest site trains exactly as in the
honest run and the models can be compared. The stated bound: a hostile run's global model is
no farther (L2) from the honest run's than the honest run moved from the initial model.
Several hostile sites share a run (each is judged alone) to keep the module to four runs
(honest, plain, SecAgg+ with every kind, SecAgg+ with a wrong-shaped masked update alone,
whose round must finish with the other five); a plain inflated sample count, and a reversed
update only a robust rule resists, are checked on the strategy itself
(tests/server/test_update_validation.py, test_robust_aggregation.py).
"""

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from common.checkpoint import load_checkpoint
from common.federation_job import FederationJob
from common.models import build_model
from simulations.runner import run_simulation_job
from simulations.simulation_settings import SimulationSettings
from simulations.synthetic_lesions import write_synthetic_lesions

pytestmark = pytest.mark.e2e

SITES = 6


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("data") / "lesions.npz"
    return write_synthetic_lesions(path, n_train=240, n_val=40, n_test=80, image_size=16, seed=5)


def _job(secure: bool = False, aggregation: str = "mean") -> FederationJob:
    return FederationJob.model_validate(
        {
            "rounds": 1,
            "min_sites": 2,
            "train": {"batch_size": 20, "learning_rate": 0.003},
            "privacy": {"enabled": False},
            "strategy": {"aggregation": aggregation},
            "secure_aggregation": {"enabled": secure, "reconstruction_threshold": 0.5},
        }
    )


def _run(
    dataset: Path, tmp: pytest.TempPathFactory, job: FederationJob, hostile: str = ""
) -> tuple[list[np.ndarray], dict[str, Any]]:
    """Run the job (it must finish: run_simulation_job raises otherwise); its model, metrics."""
    run_dir = tmp.mktemp("run")
    settings = SimulationSettings(data=dataset, sites=SITES, hostile=hostile)
    run_simulation_job(job, settings, run_dir, [])
    state = load_checkpoint(run_dir / "global_model.pt")["state_dict"]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    return [t.numpy().astype(np.float64) for t in state.values()], metrics


def _distance(a: list[np.ndarray], b: list[np.ndarray]) -> float:
    return float(np.sqrt(sum(np.square(x - y).sum() for x, y in zip(a, b, strict=True))))


@pytest.fixture(scope="module")
def honest(dataset: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[list, float]:
    """The honest run's model and how far it moved from the initial model."""
    model, _ = _run(dataset, tmp_path_factory, _job())
    job = _job()
    torch.manual_seed(job.seed)  # as the ServerApp builds the initial model
    start = build_model(job.model, 1, 2, (16, 16), job.privacy.enabled).state_dict()
    moved = _distance(model, [t.numpy().astype(np.float64) for t in start.values()])
    assert moved > 0
    return model, moved


def _rejections(metrics: dict[str, Any]) -> dict[str, str]:
    return {r["site"]: r["reason"] for r in metrics["rejections"]}


def _check_close(model: list[np.ndarray], honest: tuple[list, float]) -> float:
    reference, moved = honest
    assert all(np.isfinite(a).all() for a in model)
    distance = _distance(model, reference)
    assert distance <= moved, (distance, moved)
    return distance


def test_plain_nan_huge_scaled_and_wrong_shaped_updates_are_rejected_by_name(
    dataset: Path, tmp_path_factory: pytest.TempPathFactory, honest: tuple[list, float]
) -> None:
    hostile = "1:nan,2:huge,3:wrong-shape,4:scale1000"
    model, metrics = _run(dataset, tmp_path_factory, _job(), hostile)
    rejected = _rejections(metrics)
    assert set(rejected) == {"site-1", "site-2", "site-3", "site-4"}
    assert "non-finite" in rejected["site-1"]
    assert "beyond" in rejected["site-2"] and "beyond" in rejected["site-4"]
    assert "shape" in rejected["site-3"]
    _check_close(model, honest)


def test_secure_aggregation_survives_nan_scale1000_wrong_shape_and_inflated_weight(
    dataset: Path, tmp_path_factory: pytest.TempPathFactory, honest: tuple[list, float]
) -> None:
    """The server sees only the unmasked mean: a poisoned part makes it fail the checks.

    A wrong-shaped masked vector, or a declared sample count its masked weight cannot hold,
    is taken out of the round before Flower's SecAgg+ sums it (it used to stop the job).
    """
    hostile = "1:nan,2:scale1000,3:wrong-shape,4:inflated-examples"
    model, metrics = _run(dataset, tmp_path_factory, _job(secure=True), hostile)
    rejected = _rejections(metrics)
    assert "shape" in rejected.pop("site-3")
    assert "max_weight" in rejected.pop("site-4")
    assert rejected, "the poisoned unmasked mean was aggregated"
    assert all("SecAgg+" in reason for reason in rejected.values()), rejected
    assert not any(f["phase"] == "train" for f in metrics.get("failures", [])), metrics
    _check_close(model, honest)


def test_secure_round_finishes_without_a_wrong_shaped_masked_update(
    dataset: Path, tmp_path_factory: pytest.TempPathFactory, honest: tuple[list, float]
) -> None:
    model, metrics = _run(dataset, tmp_path_factory, _job(secure=True), "3:wrong-shape")
    rejected = _rejections(metrics)
    assert list(rejected) == ["site-3"] and "masked array 0 has " in rejected["site-3"]
    assert "where shape (16, 1, 3, 3) needs" in rejected["site-3"]
    assert metrics["federated"]["train"], "the round did not finish with the other sites"
    distance = _check_close(model, honest)
    assert distance < honest[1]  # moved by the honest sites' mean, not kept at the start
