"""Caches of an older format (before the 3D axis fix) are refused at training and at predict."""

import json
from pathlib import Path

import pytest
import torch
from flwr.app import Context, RecordDict
from typer.testing import CliRunner

from client.predict_cli import app
from client.site_client import SiteClient
from client.site_limits import SiteLimits
from common.checkpoint import load_checkpoint, save_checkpoint
from common.data.preprocessing_contract import (
    CONTRACT_FILE,
    PreprocessingContract,
    write_contract,
)
from common.errors import DataFormatError
from common.exit_codes import ExitCode
from common.federation_job import FederationJob
from common.models import build_model
from simulations.synthetic_lesions import write_synthetic_lesions

CONTRACT = PreprocessingContract(window="percentile", size=32, class_names="normal,lesion")


def test_a_site_refuses_to_train_on_a_cache_prepared_before_format_versions(
    tmp_path: Path,
) -> None:
    cache = tmp_path / "hospital-a-cache"
    write_synthetic_lesions(cache / "dataset.npz", n_train=16, n_val=4, n_test=4)
    write_contract(cache, CONTRACT)
    raw = json.loads((cache / CONTRACT_FILE).read_text())
    del raw["format_version"]  # as prepare wrote every cache before the 3D axis fix
    (cache / CONTRACT_FILE).write_text(json.dumps(raw))
    limits = SiteLimits(data=cache, name="hospital-a", max_epsilon=10.0)
    context = Context(run_id=1, node_id=1, node_config={}, state=RecordDict(), run_config={})
    job = FederationJob.model_validate({"image_size": 32, "preprocessing": CONTRACT.model_dump()})
    with pytest.raises(DataFormatError) as error:
        SiteClient(context, job=job, limits=limits)
    assert error.value.path == cache and error.value.exit_code == ExitCode.DATA_ERROR
    assert "no format version" in str(error.value) and "prepare it again" in str(error.value)


def test_predict_refuses_a_model_trained_on_caches_of_an_older_format(tmp_path: Path) -> None:
    job = FederationJob.model_validate({"image_size": 32, "preprocessing": CONTRACT.model_dump()})
    network = build_model(job.model, 1, 2, (32, 32), dp_enabled=False)
    current = save_checkpoint(tmp_path / "current.pt", network.state_dict(), job, 3)
    payload = load_checkpoint(current)
    del payload["job"]["preprocessing"]["format_version"]  # a job of the caches before it
    stale = tmp_path / "stale.pt"
    torch.save(payload, stale)
    images = tmp_path / "images"
    images.mkdir()

    def predict(model: Path) -> tuple[int, str]:
        out = tmp_path / f"out-{model.stem}"
        args = ["predict", "--model", str(model), "--input", str(images), "--out", str(out)]
        result = CliRunner().invoke(app, args)
        return result.exit_code, result.output

    code, output = predict(stale)
    assert code == ExitCode.DATA_ERROR, output
    assert "stale.pt" in output and "prepare each cache again" in output
    code, output = predict(current)  # the same model with the format is not refused for it
    assert "format" not in output, output
