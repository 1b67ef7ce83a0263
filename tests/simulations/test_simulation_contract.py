"""`medfed-sim` takes the preprocessing contract from the caches it reads and gives it to sites."""

from pathlib import Path

import numpy as np
import pytest

from common.data.federated_split import split_across_sites
from common.data.loading import load_dataset
from common.data.partition import PartitionScheme
from common.data.preprocessing_contract import PreprocessingContract, write_contract
from common.errors import ConfigError, DataFormatError
from common.federation_job import FederationJob
from simulations.runner import _write_sites, fit_job_to_data

SIZE = 16
CONTRACT = PreprocessingContract(window="percentile", size=SIZE, class_names="normal,lesion")


def _cache(folder: Path, contract: PreprocessingContract | None, seed: int) -> Path:
    """A site cache as prepare writes it: dataset.npz and preprocessing.json."""
    rng = np.random.default_rng(seed)
    arrays: dict[str, np.ndarray] = {"class_names": np.array(["normal", "lesion"])}
    for split, count in (("train", 12), ("val", 4), ("test", 4)):
        arrays[f"{split}_images"] = rng.integers(0, 255, (count, SIZE, SIZE), dtype=np.uint8)
        arrays[f"{split}_labels"] = np.arange(count) % 2
    folder.mkdir(parents=True)
    np.savez(folder / "dataset.npz", **arrays)
    if contract is not None:
        write_contract(folder, contract)
    return folder


def test_the_job_takes_the_caches_contract_and_each_site_gets_it(tmp_path: Path) -> None:
    splits = load_dataset(_cache(tmp_path / "cache", CONTRACT, 0))
    job = fit_job_to_data(FederationJob(), splits)
    assert job.preprocessing == CONTRACT and job.image_size == SIZE
    sites = split_across_sites(splits, 2, PartitionScheme.parse("iid"), 0)
    sites_dir = _write_sites(tmp_path / "run", sites, splits)
    for site in ("site-0", "site-1"):
        assert load_dataset(sites_dir / site / "data.npz").preprocessing == CONTRACT

    other = PreprocessingContract.model_validate({**CONTRACT.hashed_fields(), "window": "lung"})
    declared = FederationJob.model_validate({"image_size": SIZE, "preprocessing": other})
    with pytest.raises(ConfigError, match="window: expected 'lung', found 'percentile'"):
        fit_job_to_data(declared, splits)

    plain = load_dataset(tmp_path / "cache" / "dataset.npz")
    (tmp_path / "cache" / "preprocessing.json").unlink()
    assert fit_job_to_data(FederationJob(), load_dataset(tmp_path / "cache")).preprocessing is None
    assert plain.preprocessing == CONTRACT


def test_hospital_caches_prepared_differently_are_not_pooled(tmp_path: Path) -> None:
    _cache(tmp_path / "caches" / "a", CONTRACT, 1)
    wider = PreprocessingContract.model_validate({**CONTRACT.hashed_fields(), "spacing_mm": 0.7})
    _cache(tmp_path / "caches" / "b", wider, 2)
    with pytest.raises(DataFormatError, match="spacing_mm: expected None, found 0.7"):
        load_dataset(tmp_path / "caches")
