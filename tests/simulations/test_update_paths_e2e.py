"""SecAgg+ and float16 updates change how a site's update travels, not where the model ends.

Three runs of the real ServerApp and ClientApp on Flower's Simulation Engine, one federation:
three hospitals of different sizes (each its own cache), DP-SGD at epsilon 8, one round. The
simulated sites train with fixed seeds, so each site computes the same update in every run.
The plain float32 run is the reference for the other two: SecAgg+ (masked, quantised sums)
and float16 updates. The coordinator refuses any array that is not the job's precision, so a
float16 run without rejections shows every site sent float16.
"""

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from common.checkpoint import load_checkpoint
from common.data.site_cache import DATASET_FILE
from common.federation_job import FederationJob
from common.models import build_model
from simulations.runner import run_simulation_job
from simulations.simulation_settings import SimulationSettings
from simulations.synthetic_lesions import write_synthetic_lesions

pytestmark = pytest.mark.e2e

SIZE = 32


@pytest.fixture(scope="module")
def caches(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three hospitals of different sizes, each its own cache."""
    root = tmp_path_factory.mktemp("caches")
    for i in range(3):
        write_synthetic_lesions(root / f"site-{i}" / DATASET_FILE, n_train=64 + 32 * i,
                                n_val=16, n_test=4, image_size=SIZE, seed=i)  # fmt: skip
    return root


def _job(secure: bool = False, precision: str = "float32") -> FederationJob:
    return FederationJob.model_validate(
        {
            "name": "update-paths",
            "rounds": 1,
            "min_sites": 3,
            "image_size": SIZE,
            "privacy": {"enabled": True, "target_epsilon": 8.0},
            "secure_aggregation": {"enabled": secure},
            "update_precision": precision,
        }
    )


def _run(
    caches: Path, tmp: pytest.TempPathFactory, job: FederationJob
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """The job's final global model and its metrics."""
    run_dir = tmp.mktemp("run")
    run_simulation_job(job, SimulationSettings(data=caches, sites=3, partition="site"), run_dir, [])
    metrics = json.loads((run_dir / "metrics.json").read_text())
    return load_checkpoint(run_dir / "global_model.pt")["state_dict"], metrics


@pytest.fixture(scope="module")
def reference(
    caches: Path, tmp_path_factory: pytest.TempPathFactory
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """The plain float32 run's global model, and the initial model it started from."""
    model, metrics = _run(caches, tmp_path_factory, _job())
    assert metrics["rejections"] == [], metrics["rejections"]
    job = _job()
    torch.manual_seed(job.seed)  # as the ServerApp builds the initial model
    initial = build_model(job.model, 1, 2, (SIZE, SIZE), dp_enabled=True).state_dict()
    return model, initial


def _flat(state: dict[str, torch.Tensor]) -> np.ndarray:
    return np.concatenate([t.numpy().astype(np.float64).ravel() for t in state.values()])


def test_secagg_global_model_equals_plain_fedavg_up_to_quantisation(
    caches: Path,
    tmp_path_factory: pytest.TempPathFactory,
    reference: tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]],
) -> None:
    plain, initial = reference
    secure, _ = _run(caches, tmp_path_factory, _job(secure=True))
    moved, differences = [], []
    for name, value in plain.items():
        differences.append(float((secure[name].float() - value.float()).abs().max()))
        moved.append(float((value.float() - initial[name].float()).abs().max()))
    # Flower quantises each weighted delta to 2**22 levels over +-2 (steps of ~1e-6, times
    # max_weight / all examples = 35 here): the sums agree to that, far below a training step.
    assert 0 < max(differences) < 5e-4  # > 0: the masked, quantised path really ran
    assert max(moved) > 20 * max(differences)  # the round's update dwarfs the difference
    assert all(torch.isfinite(t).all() for t in secure.values())


def test_a_float16_federation_ends_within_rounding_of_the_float32_one(
    caches: Path,
    tmp_path_factory: pytest.TempPathFactory,
    reference: tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]],
) -> None:
    plain, initial = reference
    half, metrics = _run(caches, tmp_path_factory, _job(precision="float16"))
    assert metrics["rejections"] == [], metrics["rejections"]
    moved = np.linalg.norm(_flat(plain) - _flat(initial))
    apart = np.linalg.norm(_flat(half) - _flat(plain))
    print(f"float32 run moved {moved:.4g}; float16 run ended {apart:.4g} from it")
    assert moved > 0.1
    # Stated tolerance: the runs end within 1% of how far training moved the model.
    assert 0 < apart < 0.01 * moved, (apart, moved)
