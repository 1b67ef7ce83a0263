"""SecAgg+ changes who can see an update, not the result: a real Flower simulation, twice."""

from pathlib import Path

import pytest
import torch

from common.checkpoint import load_checkpoint
from common.config import PrivacyConfig
from common.data.site_cache import DATASET_FILE
from common.federation_job import FederationJob, SecureAggregationConfig
from common.models import build_model
from simulations.runner import run_simulation_job
from simulations.simulation_settings import SimulationSettings
from simulations.synthetic_lesions import write_synthetic_lesions

pytestmark = pytest.mark.e2e


def test_secagg_global_model_equals_plain_fedavg_up_to_quantisation(tmp_path: Path) -> None:
    caches = tmp_path / "caches"  # three hospitals of different sizes, each its own cache
    for i in range(3):
        write_synthetic_lesions(caches / f"site-{i}" / DATASET_FILE, n_train=64 + 32 * i,
                                n_val=16, n_test=4, image_size=32, seed=i)  # fmt: skip
    settings = SimulationSettings(data=caches, sites=3, partition="site")
    models = {}
    for secure in (False, True):
        job = FederationJob(
            name="equivalence",
            rounds=1,
            min_sites=3,
            image_size=32,
            privacy=PrivacyConfig(enabled=True, target_epsilon=8.0),
            secure_aggregation=SecureAggregationConfig(enabled=secure),
        )
        run_dir = tmp_path / ("secure" if secure else "plain")
        run_simulation_job(job, settings, run_dir, [])  # simulated sites: fixed seeds
        models[secure] = load_checkpoint(run_dir / "global_model.pt")["state_dict"]

    torch.manual_seed(job.seed)
    initial = build_model(job.model, 1, 2, (32, 32), dp_enabled=True).state_dict()
    moved, differences = [], []
    for name, plain in models[False].items():
        secure = models[True][name]
        differences.append(float((secure.float() - plain.float()).abs().max()))
        moved.append(float((plain.float() - initial[name].float()).abs().max()))
    # Flower quantises each weighted delta to 2**22 levels over +-2 (steps of ~1e-6, times
    # max_weight / all examples = 35 here): the sums agree to that, far below a training step.
    assert 0 < max(differences) < 5e-4  # > 0: the masked, quantised path really ran
    assert max(moved) > 20 * max(differences)  # the round's update dwarfs the difference
    assert all(torch.isfinite(t).all() for t in models[True].values())
