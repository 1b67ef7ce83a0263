"""The preprocessing contract: its hash, its comparison, and its trip through job and checkpoint."""

import json
import tomllib
from pathlib import Path

import pytest
import torch
from flwr.common.config import flatten_dict

from common.checkpoint import load_checkpoint, save_checkpoint
from common.data.preprocessing_contract import (
    CONTRACT_FILE,
    FORMAT_VERSION,
    PreprocessingContract,
    read_contract_beside,
    write_contract,
)
from common.errors import ConfigError, DataFormatError
from common.exit_codes import ExitCode
from common.federation_job import FederationJob, load_federation_job
from server.job_app import write_job_app

CONTRACT = PreprocessingContract(
    window="auto", ct_window="brain", spacing_mm=0.8, size=32, class_names="normal,lesion"
)


def test_the_hash_covers_what_the_network_sees_and_not_the_versions() -> None:
    newer = {**CONTRACT.model_dump(), "versions": {"medfed": "9.9"}}  # its sha256 still holds
    assert PreprocessingContract.model_validate(newer).differences(CONTRACT) == []
    other = PreprocessingContract.model_validate({**CONTRACT.hashed_fields(), "size": 64})
    assert other.sha256 != CONTRACT.sha256
    assert CONTRACT.differences(other) == ["size: expected 32, found 64"]
    # ct_window is not used under a fixed window, so it is not part of that contract.
    fixed = PreprocessingContract(window="percentile", ct_window="bone")
    assert fixed.ct_window == "" and fixed == PreprocessingContract(window="percentile")


def test_an_edited_contract_file_is_refused_naming_it(tmp_path: Path) -> None:
    write_contract(tmp_path, CONTRACT)
    assert read_contract_beside(tmp_path / "dataset.npz") == CONTRACT
    raw = json.loads((tmp_path / CONTRACT_FILE).read_text())
    raw["spacing_mm"] = 1.0  # the hash still says 0.8
    (tmp_path / CONTRACT_FILE).write_text(json.dumps(raw))
    with pytest.raises(DataFormatError, match=CONTRACT_FILE) as error:
        read_contract_beside(tmp_path)
    assert "sha256" in str(error.value)
    assert read_contract_beside(tmp_path / "empty" / "data.npz") is None


def test_the_job_table_travels_through_flowers_run_config_and_the_checkpoint(
    tmp_path: Path,
) -> None:
    job = FederationJob.model_validate({"image_size": 32, "preprocessing": CONTRACT.model_dump()})
    write_job_app(tmp_path, job)
    pyproject = tomllib.loads((tmp_path / "app" / "pyproject.toml").read_text())
    run_config = flatten_dict(pyproject["tool"]["flwr"]["app"]["config"])  # as Flower reads it
    assert "preprocessing.spacing_mm" in run_config
    assert FederationJob.from_flat(run_config).preprocessing == CONTRACT
    assert load_federation_job(tmp_path / "job.toml") == job

    no_spacing = FederationJob.model_validate(
        {"image_size": 32, "preprocessing": {**CONTRACT.hashed_fields(), "spacing_mm": None}}
    )
    assert "preprocessing.spacing_mm" not in no_spacing.to_flat()  # TOML has no None
    assert FederationJob.from_flat(no_spacing.to_flat()) == no_spacing
    assert "preprocessing.window" not in FederationJob().to_flat()  # absent: accept any

    path = save_checkpoint(tmp_path / "model.pt", {"w": torch.zeros(1)}, job, 2)
    saved = FederationJob.model_validate(load_checkpoint(path)["job"])
    assert saved.preprocessing == CONTRACT


def test_a_job_whose_contract_contradicts_its_shape_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "job.toml"
    path.write_text('image_size = 64\n[preprocessing]\nsize = 32\nwindow = "lung"\n')
    with pytest.raises(ConfigError, match="preprocessing has size = 32"):
        load_federation_job(path)
    path.write_text('image_size = 32\n[preprocessing]\nsize = 32\nsha256 = "abc"\n')
    with pytest.raises(ConfigError, match="sha256 abc does not match"):
        load_federation_job(path)


def test_contracts_written_before_registration_keep_their_hash() -> None:
    registered = PreprocessingContract.model_validate(
        {**CONTRACT.hashed_fields(), "channels": 3, "channel_names": "T1,T2,FLAIR",
         "registration": "atlas:affine"}
    )  # fmt: skip
    assert "registration" not in CONTRACT.hashed_fields()  # the default leaves the hash as it was
    assert registered.sha256 != CONTRACT.sha256
    assert "registration: expected 'atlas:affine', found 'none'" in registered.differences(CONTRACT)


def test_the_format_version_leaves_every_hash_as_it_was() -> None:
    # digests computed by the medfed before format versions (commit fc79cd2)
    assert CONTRACT.sha256 == "1a73fe6c890e82f8f94bd154e3abff67ba4f97a3de0a4c8e73066a5b912fb3fe"
    volumes = PreprocessingContract(dims=3, task="segmentation", segment_names="background,lesion")
    assert volumes.sha256 == "3771dde4b346ff01e51e2170c6c748512004ed904a29b8e0f20ac317b3862512"
    older = PreprocessingContract.model_validate({**CONTRACT.model_dump(), "format_version": 0})
    assert older.differences(CONTRACT) == []  # the job's comparison leaves it to the reader


@pytest.mark.parametrize("stored", [None, 0], ids=["missing", "older"])
def test_a_cache_of_an_older_format_is_refused_naming_its_folder(
    tmp_path: Path, stored: int | None
) -> None:
    cache = tmp_path / "site-a-cache"
    cache.mkdir()
    write_contract(cache, CONTRACT)
    raw = json.loads((cache / CONTRACT_FILE).read_text())
    assert raw["format_version"] == FORMAT_VERSION  # what prepare writes
    if stored is None:
        del raw["format_version"]  # as every contract before format versions
    else:
        raw["format_version"] = stored
    (cache / CONTRACT_FILE).write_text(json.dumps(raw))
    with pytest.raises(DataFormatError) as error:
        read_contract_beside(cache / "dataset.npz")
    assert error.value.path == cache and "prepare it again" in str(error.value)
    assert error.value.exit_code == ExitCode.DATA_ERROR
