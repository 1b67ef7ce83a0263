"""Many simulated sites: a sampled fraction trains each round; sites without validation data."""

import json
from pathlib import Path

import pytest

from common.federation_job import FederationJob
from simulations.runner import run_simulation_job
from simulations.simulation_settings import SimulationSettings
from simulations.synthetic_lesions import write_synthetic_lesions

pytestmark = pytest.mark.e2e

SITES = 40


@pytest.fixture(scope="module")
def many_sites_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    data = write_synthetic_lesions(
        tmp_path_factory.mktemp("data") / "lesions.npz",
        n_train=200, n_val=12, n_test=40, image_size=16, seed=5,
    )  # fmt: skip
    job = FederationJob.model_validate(
        {
            "rounds": 2,
            "min_sites": 3,
            "site_fraction": 0.25,
            "privacy": {"enabled": False},
            "secure_aggregation": {"enabled": False},
        }
    )
    run_dir = tmp_path_factory.mktemp("run")
    run_simulation_job(job, SimulationSettings(data=data, sites=SITES), run_dir, [])
    return run_dir


def test_each_round_trains_and_evaluates_the_sampled_fraction_of_sites(many_sites_run) -> None:
    metrics = json.loads((many_sites_run / "metrics.json").read_text())
    for phase in ("train", "evaluate"):
        for server_round in (1, 2):
            replies = [
                s for s in metrics["sites"] if s["phase"] == phase and s["round"] == server_round
            ]
            assert len(replies) == SITES // 4, (phase, server_round)
    assert metrics["failures"] == []
    assert set(metrics["global"]) == {"0", "1", "2"}


def test_sites_without_validation_data_reply_and_are_left_out_of_the_means(
    many_sites_run,
) -> None:
    table = {s["site"]: s for s in json.loads((many_sites_run / "sites.json").read_text())}
    assert sum(1 for s in table.values() if s["val"] == 0) >= SITES - 12  # 12 val images
    metrics = json.loads((many_sites_run / "metrics.json").read_text())
    evaluated = [s for s in metrics["sites"] if s["phase"] == "evaluate"]
    empty = [s for s in evaluated if table[s["site"]]["val"] == 0]
    assert empty, "no sampled site without validation data: pick another seed"
    assert all(s["num-examples"] == 0 and s["eval-loss"] is None for s in empty)
    for server_round, aggregated in metrics["federated"]["evaluate"].items():
        sampled = [s for s in evaluated if s["round"] == int(server_round)]
        assert aggregated["num-examples"] == sum(table[s["site"]]["val"] for s in sampled)
        if aggregated["num-examples"] > 0:
            assert aggregated["eval-loss"] is not None
