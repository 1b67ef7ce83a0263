"""The pooled and local baselines save models `medfed predict` reads, beside the federated one."""

from pathlib import Path

import pytest

from client.inference.model import load_trained_model
from common.data.federated_split import split_across_sites
from common.data.loading import load_dataset
from common.data.partition import PartitionScheme
from common.federation_job import FederationJob
from common.tasks.classification import evaluate
from simulations.baselines import baseline_model_path, run_baseline
from simulations.runner import fit_job_to_data
from simulations.synthetic_lesions import write_synthetic_lesions


def test_each_baseline_model_reproduces_its_reported_test_metrics(tmp_path: Path) -> None:
    data = write_synthetic_lesions(
        tmp_path / "l.npz", n_train=120, n_val=20, n_test=60, image_size=16, seed=3
    )
    splits = load_dataset(data)
    job = fit_job_to_data(
        FederationJob.model_validate({"rounds": 1, "train": {"batch_size": 20}}), splits
    )
    sites = split_across_sites(splits, 2, PartitionScheme.parse("iid"), job.seed)
    pooled = run_baseline("pooled", job, splits, sites, tmp_path)
    local = run_baseline("local", job, splits, sites, tmp_path)
    reported = {
        baseline_model_path(tmp_path, "pooled"): pooled["rounds"][-1],
        baseline_model_path(tmp_path, "local", 0): local["sites"]["0"][-1],
        baseline_model_path(tmp_path, "local", 1): local["sites"]["1"][-1],
    }
    for path, metrics in reported.items():
        trained = load_trained_model(path)  # what `medfed predict --model` reads
        assert trained.round_number == 1, path.name
        found = evaluate(trained.network, splits.test)["roc_auc"]
        assert found == pytest.approx(metrics["roc_auc"]), path.name
    assert sorted(p.name for p in tmp_path.glob("*_model*.pt")) == [
        "local_model_site-0.pt", "local_model_site-1.pt", "pooled_model.pt",
    ]  # fmt: skip
