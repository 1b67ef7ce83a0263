"""The preprocessing contract at a site: prepare writes it, predict replays it, a job is held to it.

Real files throughout: generated DICOM series, `medfed-site prepare` and `medfed predict`
through their command lines, a real cache and checkpoint.
"""

import csv
import json
from pathlib import Path

import numpy as np
import pydicom
import pytest
import torch
from flwr.app import Context, RecordDict
from typer.testing import CliRunner

from client.cli import app as site_app
from client.inference.inputs import read_input
from client.inference.sources import find_sources
from client.predict_cli import app as predict_app
from client.site_client import SiteClient
from client.site_limits import SiteLimits
from common.checkpoint import save_checkpoint
from common.data.dicom_pixels import decode_frames
from common.data.dicom_prepare import PreprocessingConfig
from common.data.intensity import normalise_intensity
from common.data.preprocessing_contract import PreprocessingContract, read_contract_beside
from common.data.pseudonyms import SitePseudonymiser
from common.data.resampling import resample_images
from common.errors import ConfigError
from common.federation_job import FederationJob
from common.models import build_model
from simulations.dicom_writer import SeriesIdentity, write_dicom_series

SIZE = 32
CLASSES = ("normal", "lesion")


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Five patients (four MR series, percentile scaling; one CT series, the brain window),
    resampled to 1 mm and 32x32 by `medfed-site prepare`."""
    root = tmp_path_factory.mktemp("contract")
    export, rows = root / "export", ["SeriesInstanceUID,label"]
    rng = np.random.default_rng(7)
    for i, modality in enumerate(("MR", "MR", "CT", "MR", "MR")):
        volume = rng.gamma(4.0, 60.0, (4, 40, 36))  # skewed: the 99.5th percentile matters
        if i % 2:
            volume[:, 14:24, 12:22] += 400
        rescale = (1.0, -1024.0) if modality == "CT" else (1.0, 0.0)
        volume += 1000 if modality == "CT" else 0
        identity = SeriesIdentity(patient_id=f"P{i}", modality=modality)
        folder = export / f"patient{i}" / "series"
        write_dicom_series(volume, (3.0, 0.8, 0.8), folder, identity, rescale, shuffle_names_seed=i)
        rows.append(f"{identity.series_uid},{CLASSES[i % 2]}")
    labels = root / "labels.csv"
    labels.write_text("\n".join(rows) + "\n")
    cache = root / "cache"
    result = CliRunner().invoke(
        site_app,
        ["prepare", "--data", str(export), "--out", str(cache), "--labels", str(labels),
         "--classes", ",".join(CLASSES), "--ct-window", "brain", "--spacing", "1.0",
         "--size", str(SIZE)],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    return {"root": root, "export": export, "cache": cache}


def _cached_images(cache: Path) -> dict[str, np.ndarray]:
    """The cached uint8 images [slices, size, size] of each series, by series pseudonym."""
    data = np.load(cache / "dataset.npz")
    position: dict[str, int] = {}
    by_series: dict[str, list[np.ndarray]] = {}
    with (cache / "manifest.csv").open(newline="") as handle:
        for row in csv.DictReader(handle):
            split = row["split"]
            index = position.setdefault(split, 0)
            position[split] += 1
            by_series.setdefault(row["series"], []).append(data[f"{split}_images"][index])
    return {series: np.stack(images) for series, images in by_series.items()}


def test_prepare_writes_the_contract_it_applied(prepared: dict) -> None:
    contract = read_contract_beside(prepared["cache"])
    assert contract is not None
    assert (contract.window, contract.ct_window, contract.spacing_mm) == ("auto", "brain", 1.0)
    assert (contract.size, contract.channels, contract.dims, contract.task) == (
        SIZE, 1, 2, "classification",
    )  # fmt: skip
    assert contract.class_names == ",".join(CLASSES) and contract.segment_names == ""
    assert (contract.percentile_low, contract.percentile_high) == (0.5, 99.5)
    assert contract.versions.pydicom == pydicom.__version__ and contract.versions.monai
    assert contract.sha256 == contract.digest() and len(contract.sha256) == 64


def test_predicting_on_a_training_series_reproduces_the_cached_tensor(prepared: dict) -> None:
    cache, export = prepared["cache"], prepared["export"]
    contract = read_contract_beside(cache)
    assert contract is not None
    config = PreprocessingConfig.of_contract(contract)
    cached = _cached_images(cache)
    pseudonym = SitePseudonymiser.from_key_file(cache / ".site-key")
    found = find_sources(export)
    assert len(found.sources) == 5
    old_way_differs = []
    for source in found.sources:
        assert source.series is not None
        item = read_input(source, found.root, config)
        expected = cached[pseudonym(source.series.series_uid)]
        assert item.batch.shape == (len(expected), 1, SIZE, SIZE)
        as_cached = np.clip(item.batch[:, 0] * 255.0 + 0.5, 0, 255).astype(np.uint8)
        assert np.array_equal(as_cached, expected), source.name
        assert np.abs(item.batch[:, 0] - expected / 255.0).max() <= 0.5 / 255 + 1e-6
        # What predict did before: percentiles over every pixel, then MONAI's resampling.
        frames = np.concatenate([decode_frames(path) for path in source.files])
        window = config.window_for(source.series.modality)
        old = resample_images(normalise_intensity(frames, window), (0.8, 0.8), 1.0, SIZE)
        old_cached = np.clip(old * 255.0 + 0.5, 0, 255).astype(np.uint8)
        old_way_differs.append(not np.array_equal(old_cached, expected))
    assert any(old_way_differs)  # the test can tell the two normalisations apart


def _checkpoint(path: Path, contract: PreprocessingContract) -> Path:
    job = FederationJob.model_validate(
        {"image_size": SIZE, "class_names": ",".join(CLASSES), "preprocessing": contract}
    )
    torch.manual_seed(0)
    model = build_model(job.model, 1, 2, (SIZE, SIZE), dp_enabled=False)
    return save_checkpoint(path, model.state_dict(), job, 1)


def test_predict_reads_the_preprocessing_from_the_model(prepared: dict, tmp_path: Path) -> None:
    contract = read_contract_beside(prepared["cache"])
    assert contract is not None
    model = _checkpoint(tmp_path / "model.pt", contract)
    series = prepared["export"] / "patient0"
    common = ["predict", "--model", str(model), "--input", str(series), "--no-saliency"]
    result = CliRunner().invoke(predict_app, [*common, "--out", str(tmp_path / "a")])
    assert result.exit_code == 0, result.output
    summary = json.loads((tmp_path / "a" / "summary.json").read_text())
    assert summary["preprocessing"]["from"] == "model"
    assert summary["preprocessing"]["sha256"] == contract.sha256
    agreeing = [*common, "--out", str(tmp_path / "b"), "--window", "auto", "--spacing", "1.0"]
    assert CliRunner().invoke(predict_app, agreeing).exit_code == 0
    for option, value, prepared_with in (
        ("--spacing", "0.5", "1.0"),
        ("--ct-window", "lung", "'brain'"),
        ("--window", "percentile", "'auto'"),
    ):
        result = CliRunner().invoke(
            predict_app, [*common, "--out", str(tmp_path / "c"), option, value]
        )
        assert result.exit_code == 2, result.output
        assert option in result.output and prepared_with in result.output
        assert "Traceback" not in result.output


def _site_client(data: Path, job: FederationJob) -> SiteClient:
    context = Context(run_id=1, node_id=1, node_config={}, state=RecordDict(), run_config={})
    limits = SiteLimits(data=data, name="hospital-a", max_epsilon=10.0)
    return SiteClient(context, seed_for_round=lambda _round: 0, job=job, limits=limits)


def test_a_site_refuses_a_job_expecting_other_preprocessing(prepared: dict) -> None:
    cache = prepared["cache"]
    contract = read_contract_beside(cache)
    assert contract is not None

    def job(**changes: object) -> FederationJob:
        raw = {**contract.model_dump(exclude={"sha256"}), **changes}
        return FederationJob.model_validate(
            {"image_size": SIZE, "min_sites": 1, "preprocessing": raw}
        )

    _site_client(cache, job(versions={"medfed": "99.0"}))  # versions are not compared
    with pytest.raises(ConfigError) as error:
        _site_client(cache, job(spacing_mm=0.8, ct_window="bone"))
    message = str(error.value)
    assert "hospital-a" in message and "\n" not in message
    assert "spacing_mm: expected 0.8, found 1.0" in message
    assert "ct_window: expected 'bone', found 'brain'" in message

    plain = prepared["root"] / "plain" / "data.npz"  # the same arrays, no contract beside them
    plain.parent.mkdir()
    plain.write_bytes((cache / "dataset.npz").read_bytes())
    with pytest.raises(ConfigError, match="no preprocessing record"):
        _site_client(plain, job())
    _site_client(plain, FederationJob.model_validate({"image_size": SIZE, "min_sites": 1}))
