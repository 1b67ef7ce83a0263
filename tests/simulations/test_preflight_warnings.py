"""Warnings before training, on real data: hospitals' caches pooled without --partition site
(a real `medfed-sim run`, stopped before any Flower process by a missing initial-weights file),
and sites too small for their DP settings (simulated sites and a hospital's site client)."""

import logging
from pathlib import Path

import numpy as np
import pytest
from flwr.app import Context, RecordDict
from PIL import Image
from typer.testing import CliRunner
from warm_command_lines import run_command_line

from client.cli import app as site_app
from client.site_client import SiteClient
from client.site_limits import SiteLimits
from common import message_keys as keys
from common.data.federated_split import split_across_sites
from common.data.loading import load_dataset
from common.data.partition import PartitionScheme
from common.federation_job import FederationJob
from common.job_model import trained_parameters
from common.model_packing import pack_arrays
from common.models import build_model
from simulations.preflight_warnings import pooled_hospitals_warning, small_site_warnings
from simulations.simulation_settings import SimulationSettings

SIZE = 16


def _hospital(root: Path, seed: int, cases: int) -> Path:
    """A picture folder (grey discs on noise, 0/255 masks) prepared by `medfed-site prepare`."""
    rng = np.random.default_rng(seed)
    pictures = root / f"pictures-{seed}"
    (pictures / "images").mkdir(parents=True)
    (pictures / "masks").mkdir()
    yy, xx = np.mgrid[:24, :24]
    for i in range(cases):
        disc = (yy - 12) ** 2 + (xx - 8 - i % 8) ** 2 < (9 if i % 2 else 0)
        picture = rng.integers(0, 60, (24, 24)).astype(np.uint8)
        picture[disc] = 220
        Image.fromarray(picture).save(pictures / "images" / f"c{i:03d}.png")
        Image.fromarray((disc * 255).astype(np.uint8)).save(pictures / "masks" / f"c{i:03d}.png")
    cache = root / "caches" / f"hospital-{seed}"
    args = ["prepare", "--data", str(pictures), "--out", str(cache), "--size", str(SIZE)]
    result = CliRunner().invoke(site_app, args)
    assert result.exit_code == 0, result.output
    return cache


@pytest.fixture(scope="module")
def caches(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("hospitals")
    _hospital(root, 1, 40)
    _hospital(root, 2, 60)
    return root / "caches"


def test_pooled_hospitals_are_warned_about_before_any_process_starts(
    caches: Path, tmp_path: Path
) -> None:
    splits = load_dataset(caches)
    pooled = SimulationSettings(data=caches, sites=3, partition="iid")
    warning = pooled_hospitals_warning(pooled, splits)
    assert warning is not None and "2 hospitals' caches" in warning
    assert "--partition site" in warning
    kept = SimulationSettings(data=caches, sites=2, partition="site")
    assert pooled_hospitals_warning(kept, splits) is None

    # the real command line: the warning, then the refusal of the missing weights (exit 2)
    result = run_command_line(
        "medfed-sim", "run", "--data", caches, "--sites", "3", "--no-dp", "--rounds", "1",
        "--initial-weights", tmp_path / "missing.pt", "--out", tmp_path / "run",
    )  # fmt: skip
    assert result.returncode != 0 and "no such file" in result.stderr, result.stderr
    assert "pools them and re-splits" in " ".join(result.stderr.split())
    assert not (tmp_path / "run" / "sites").exists()  # nothing was split or started


def test_sites_too_small_for_their_dp_settings_are_named_with_figures(caches: Path) -> None:
    splits = load_dataset(caches)
    job = FederationJob.model_validate(
        {"rounds": 5, "image_size": SIZE, "train": {"batch_size": 4}}
    )
    sites = split_across_sites(splits, 10, PartitionScheme.parse("iid"), 0)
    warnings = small_site_warnings(job, sites)
    assert len(warnings) == 3  # the three smallest are checked, and each is too small
    first = warnings[0]
    for figure in ("expected batch", "steps a round", "noise multiplier", "x the clipping norm"):
        assert figure in first
    assert "fewer simulated sites than 10 (--sites)" in first
    assert "a larger batch size than 4" in first

    # the same data in one site, at a large epsilon: nothing to warn about; without DP neither
    whole = split_across_sites(splits, 1, PartitionScheme.parse("iid"), 0)
    privacy = job.privacy.model_copy(update={"target_epsilon": 50.0})
    train = job.train.model_copy(update={"batch_size": 32})
    assert (
        small_site_warnings(job.model_copy(update={"privacy": privacy, "train": train}), whole)
        == []
    )
    no_dp = job.model_copy(update={"privacy": job.privacy.model_copy(update={"enabled": False})})
    assert small_site_warnings(no_dp, sites) == []


def test_training_only_the_head_is_judged_by_its_own_parameters(caches: Path) -> None:
    """The noise's norm grows with the square root of the trained parameters: the same site
    and noise that drown the whole network leave the output layer something to learn."""
    whole = split_across_sites(load_dataset(caches), 1, PartitionScheme.parse("iid"), 0)
    job = FederationJob.model_validate(
        {"rounds": 5, "image_size": SIZE, "train": {"batch_size": 16}}
    )
    [warning] = small_site_warnings(job, whole)
    assert f"{trained_parameters(job):,} trained parameters" in warning
    assert "training fewer parameters (train.trainable)" in warning
    head = job.model_copy(update={"train": job.train.model_copy(update={"trainable": "head"})})
    assert trained_parameters(head) < trained_parameters(job) / 50
    assert small_site_warnings(head, whole) == []


def test_a_hospital_site_warns_in_its_log_before_its_first_round(
    caches: Path, caplog: pytest.LogCaptureFixture
) -> None:
    job = FederationJob.model_validate(
        {
            "task": "classification", "rounds": 3, "image_size": SIZE, "num_classes": 2,
            "in_channels": 1, "train": {"batch_size": 8},
        }
    )  # fmt: skip
    context = Context(run_id=1, node_id=1, node_config={}, state=RecordDict(), run_config={})
    limits = SiteLimits(data=caches / "hospital-1", name="hospital-a", max_epsilon=10.0)
    client = SiteClient(context, seed_for_round=lambda _round: 0, job=job, limits=limits)
    model = build_model(job.model, 1, 2, (SIZE, SIZE), dp_enabled=True)
    start = [tensor.numpy().copy() for tensor in model.state_dict().values()]
    with caplog.at_level(logging.WARNING, logger="client.site_client"):
        client.fit([pack_arrays(start)], {keys.SERVER_ROUND: 1})
    said = [r.getMessage() for r in caplog.records if r.name == "client.site_client"]
    assert any(m.startswith("site hospital-a is small for its DP settings") for m in said), said
