"""A site plans each DP round once: the warning, the ledger's reservation and training share it."""

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from flwr.app import Context, RecordDict

import common.privacy.image_dp
import common.privacy.patient_dp
import common.privacy.planning
from client.privacy_ledger import LEDGER_FILE, PrivacyLedger
from client.site_client import SiteClient
from client.site_limits import SiteLimits
from common import message_keys as keys
from common.data.loading import load_dataset
from common.dp_learnability import learnability_warning
from common.federation_job import FederationJob
from common.job_model import trained_parameters
from common.model_packing import pack_arrays
from common.models import build_model
from common.privacy.accounting import calibrate_noise_multiplier
from simulations.synthetic_lesions import generate_synthetic_lesions

#: Every module that calls Opacus' noise search (imported by name into each).
_CALIBRATING = (common.privacy.image_dp, common.privacy.patient_dp, common.privacy.planning)


@pytest.fixture
def calibrations(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """The noise multipliers calibrated from now on: the real function, each call counted."""
    found: list[float] = []
    real: Callable[..., float] = calibrate_noise_multiplier

    def counted(*args: Any, **kwargs: Any) -> float:
        noise = real(*args, **kwargs)
        found.append(noise)
        return noise

    for module in _CALIBRATING:
        monkeypatch.setattr(module, "calibrate_noise_multiplier", counted)
    return found


def _site_data(path: Path, n_train: int, images_per_patient: int) -> Path:
    """Synthetic lesion images whose splits know their patients (as a site cache does)."""
    arrays = generate_synthetic_lesions(n_train=n_train, n_val=8, n_test=4, image_size=32)
    for split in ("train", "val", "test"):
        count = len(arrays[f"{split}_labels"])
        arrays[f"{split}_patients"] = np.array(
            [f"{split}-{i // images_per_patient}" for i in range(count)]
        )
    np.savez_compressed(path, **arrays)
    return path


def _client(data: Path, state_dir: Path, batch_size: int, rounds: int) -> SiteClient:
    job = FederationJob.model_validate(
        {
            "rounds": rounds,
            "image_size": 32,
            "train": {"batch_size": batch_size},
            "privacy": {"enabled": True, "target_epsilon": 8.0},
            "secure_aggregation": {"enabled": False},
        }
    )
    limits = SiteLimits(
        data=data, name="hospital-a", max_epsilon=50.0, state_dir=state_dir,
        require_secure_aggregation=False,
    )  # fmt: skip
    context = Context(run_id=1, node_id=1, node_config={}, state=RecordDict(), run_config={})
    return SiteClient(context, seed_for_round=lambda r: r, job=job, limits=limits)


def _weights(client: SiteClient) -> list[np.ndarray]:
    torch.manual_seed(0)
    model = build_model(client.job.model, 1, 2, (32, 32), True)
    return [t.numpy().copy() for t in model.state_dict().values()]


def test_a_site_calibrates_the_noise_once_per_job_and_accounts_what_it_planned(
    tmp_path: Path, calibrations: list[float], caplog: pytest.LogCaptureFixture
) -> None:
    data = _site_data(tmp_path / "site.npz", n_train=256, images_per_patient=2)
    client = _client(data, tmp_path / "state", batch_size=64, rounds=2)
    weights = _weights(client)
    with caplog.at_level(logging.WARNING):
        client.fit([pack_arrays(weights)], {keys.SERVER_ROUND: 1})
    assert len(calibrations) == 1  # was 3: the warning, the reservation and training
    assert "is small for its DP settings" not in caplog.text  # no doubled-batch figure asked
    client.fit([pack_arrays(weights)], {keys.SERVER_ROUND: 2})
    assert len(calibrations) == 1  # later rounds take the noise from the stored state

    # The ledger holds what Opacus' search gives for this site: 128 patients, 32 a step.
    expected = calibrate_noise_multiplier(client.job.privacy, 32 / 128, steps=2 * 4)
    rows = PrivacyLedger(tmp_path / "state" / LEDGER_FILE, "hospital-a").rows()
    assert [(row.round, row.kind) for row in rows] == [(1, "spent"), (2, "spent")]
    assert [row.noise_multiplier for row in rows] == [calibrations[0]] * 2 == [expected] * 2
    assert {(row.sample_rate, row.unit) for row in rows} == {(32 / 128, "patient")}


def test_a_small_site_warns_as_before_and_calibrates_only_the_doubled_batch_again(
    tmp_path: Path, calibrations: list[float], caplog: pytest.LogCaptureFixture
) -> None:
    data = _site_data(tmp_path / "site.npz", n_train=48, images_per_patient=3)
    client = _client(data, tmp_path / "state", batch_size=6, rounds=1)
    with caplog.at_level(logging.WARNING):
        client.fit([pack_arrays(_weights(client))], {keys.SERVER_ROUND: 1})
    assert len(calibrations) == 2  # the round's plan, and the noise quoted at batch 12

    train = load_dataset(data).train  # the warning worked out from scratch, as medfed-sim does
    unplanned = learnability_warning(
        "hospital-a", client.job.privacy, train, 6, 1, 1, trained_parameters(client.job)
    )
    assert unplanned is not None and "(at 12: " in unplanned
    assert [r.getMessage() for r in caplog.records if "is small" in r.getMessage()] == [unplanned]
