"""The pooled and local baselines save models `medfed predict` reads, beside the federated one."""

from pathlib import Path

import pytest

from client.inference.model import load_trained_model
from common.data.federated_split import split_across_sites
from common.data.loading import load_dataset
from common.data.partition import PartitionScheme
from common.federation_job import FederationJob
from common.tasks.classification import evaluate, threshold_on
from common.threshold_data import load_threshold_data
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


def test_a_baseline_chooses_its_threshold_on_the_jobs_threshold_data(tmp_path: Path) -> None:
    data = write_synthetic_lesions(
        tmp_path / "l.npz", n_train=80, n_val=20, n_test=40, image_size=16, seed=3
    )
    public = write_synthetic_lesions(
        tmp_path / "public.npz", n_train=40, n_val=10, n_test=30, image_size=16, seed=9
    )
    splits = load_dataset(data)
    raw = {"rounds": 1, "train": {"batch_size": 20}, "threshold_data": str(public)}
    job = fit_job_to_data(FederationJob.model_validate(raw), splits)
    sites = split_across_sites(splits, 1, PartitionScheme.parse("iid"), job.seed)
    reported = run_baseline("pooled", job, splits, sites, tmp_path)["rounds"][-1]
    model = load_trained_model(baseline_model_path(tmp_path, "pooled")).network
    threshold_data = load_threshold_data(job)
    assert threshold_data is not None and len(threshold_data) == 80  # every split
    on_public = threshold_on(model, threshold_data)
    assert reported["threshold"] == on_public
    assert on_public != threshold_on(model, sites[0].val)  # the site's own would differ
