"""float16 updates on Flower's Simulation Engine: the same federation, a model within rounding.

Two runs of the real ServerApp and ClientApp (3 sites, 2 rounds, no DP, no SecAgg+, fixed
seeds), float32 and float16 updates. The coordinator refuses any array that is not the job's
precision, so a float16 run without rejections shows every site sent float16.
"""

import json

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


def _job(precision: str) -> FederationJob:
    return FederationJob.model_validate(
        {
            "rounds": 2,
            "min_sites": 3,
            "train": {"batch_size": 20, "learning_rate": 0.003},
            "privacy": {"enabled": False},
            "secure_aggregation": {"enabled": False},
            "update_precision": precision,
        }
    )


def _flat(arrays: list[np.ndarray]) -> np.ndarray:
    return np.concatenate([a.astype(np.float64).ravel() for a in arrays])


def test_a_float16_federation_ends_within_rounding_of_the_float32_one(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    data = write_synthetic_lesions(
        tmp_path_factory.mktemp("data") / "lesions.npz",
        n_train=240, n_val=30, n_test=30, image_size=16, seed=7,
    )  # fmt: skip
    models = {}
    for precision in ("float32", "float16"):
        run_dir = tmp_path_factory.mktemp(precision)
        run_simulation_job(_job(precision), SimulationSettings(data=data, sites=3), run_dir, [])
        metrics = json.loads((run_dir / "metrics.json").read_text())
        assert metrics["rejections"] == [], metrics["rejections"]
        state = load_checkpoint(run_dir / "global_model.pt")["state_dict"]
        models[precision] = _flat([t.numpy() for t in state.values()])
    torch.manual_seed(0)  # the job's seed, as the ServerApp builds the initial model
    start = build_model(_job("float32").model, 1, 2, (16, 16), False).state_dict()
    moved = np.linalg.norm(models["float32"] - _flat([t.numpy() for t in start.values()]))
    apart = np.linalg.norm(models["float16"] - models["float32"])
    print(f"float32 run moved {moved:.4g}; float16 run ended {apart:.4g} from it")
    assert moved > 0.1
    # Stated tolerance: the runs end within 1% of how far training moved the model.
    assert 0 < apart < 0.01 * moved, (apart, moved)
