from dataclasses import replace

import numpy as np
import pytest
from opacus.accountants import RDPAccountant

from common.data.arrays import ImageArrays
from common.errors import ConfigError
from common.federation_job import FederationJob
from common.local_training import train_local_round
from common.models import build_model
from common.privacy.accounting import RDP_ORDERS, PrivacyState
from common.privacy.planning import plan_round


def _job(tmp_path, rounds: int = 3, epsilon: float = 4.0) -> FederationJob:
    return FederationJob.model_validate(
        {
            "rounds": rounds,
            "train": {"batch_size": 20, "local_epochs": 1},
            "privacy": {"enabled": True, "target_epsilon": epsilon, "target_delta": 1e-4},
        }
    )


def _rounds(job: FederationJob, data: ImageArrays, state: PrivacyState | None, rounds: range):
    model = build_model(job.model, 1, 2, (16, 16), dp_enabled=True)
    updates = []
    for server_round in rounds:
        update = train_local_round(model, data, job, seed=server_round, privacy_state=state)
        state = update.privacy_state
        updates.append(update)
    return updates


def test_epsilon_accumulates_over_rounds_and_matches_opacus_accountant(tmp_path, small_images):
    job = _job(tmp_path)
    updates = _rounds(job, small_images, None, range(1, 4))
    epsilons = [u.epsilon for u in updates]
    assert epsilons[0] < epsilons[1] < epsilons[2]

    # Opacus' own RDP accountant, fed the steps the site took so far, gives the same epsilon.
    steps_per_round = len(small_images) // job.train.batch_size  # Poisson loader: 1/q steps
    noise = updates[0].privacy_state.noise_multiplier
    for rounds_done, update in enumerate(updates, start=1):
        accountant = RDPAccountant()
        accountant.history = [(noise, 20 / 200, steps_per_round * rounds_done)]
        expected = accountant.get_epsilon(1e-4, alphas=RDP_ORDERS)
        assert update.epsilon == pytest.approx(expected, rel=1e-9)

    # The noise was calibrated so that the whole job spends the target epsilon, no more.
    assert epsilons[-1] == pytest.approx(job.privacy.target_epsilon, rel=0.02)
    assert epsilons[-1] <= job.privacy.target_epsilon * 1.01


def test_accountant_state_survives_a_fresh_process(tmp_path, small_images):
    """Flower may start each round in a new process: the JSON state carries the accountant."""
    job = _job(tmp_path)
    first = _rounds(job, small_images, None, range(1, 3))
    restored = PrivacyState.from_json(first[0].privacy_state.to_json())
    resumed = _rounds(job, small_images, restored, range(2, 3))
    assert resumed[0].epsilon == pytest.approx(first[1].epsilon)
    assert resumed[0].privacy_state.history == first[1].privacy_state.history


def test_dp_off_reports_no_epsilon(tmp_path, small_images):
    job = FederationJob.model_validate({"privacy": {"enabled": False}})
    model = build_model(job.model, 1, 2, (16, 16), dp_enabled=False)
    update = train_local_round(model, small_images, job, seed=0, privacy_state=None)
    assert update.epsilon is None and update.privacy_state is None
    assert update.privacy_unit is None
    assert update.num_examples == len(small_images)  # samples, not batches


def _with_patients(data: ImageArrays, per_patient: int) -> ImageArrays:
    return replace(data, patients=np.arange(len(data)) // per_patient)


def test_data_with_patients_trains_per_patient_and_accounts_at_the_patient_rate(
    tmp_path, small_images
):
    job = _job(tmp_path, rounds=2)  # batch 20 images = 5 patients of 4 images, out of 50
    data = _with_patients(small_images, 4)
    first, second = _rounds(job, data, None, range(1, 3))
    assert first.privacy_unit == second.privacy_unit == "patient"
    assert first.privacy_state.unit == "patient" and first.steps == 10  # 50 / 5 per epoch
    noise = first.privacy_state.noise_multiplier
    for rounds_done, update in enumerate((first, second), start=1):
        accountant = RDPAccountant()
        accountant.history = [(noise, 5 / 50, 10 * rounds_done)]
        assert update.epsilon == pytest.approx(accountant.get_epsilon(1e-4, alphas=RDP_ORDERS))
    assert second.epsilon == pytest.approx(job.privacy.target_epsilon, rel=0.02)
    # The ledger's projection before a round is what the round then accounts.
    planned = plan_round(job.privacy, data, 20, 1, 2, first.privacy_state).accounting
    assert planned == second.privacy_state.history[-1][:2] + (10,)
    resumed = _rounds(job, data, PrivacyState.from_json(first.privacy_state.to_json()), range(2, 3))
    assert resumed[0].epsilon == pytest.approx(second.epsilon)


def test_patient_unit_on_data_without_patients_is_refused_not_run_per_image(tmp_path, small_images):
    job = FederationJob.model_validate({"privacy": {"unit": "patient", "target_delta": 1e-4}})
    model = build_model(job.model, 1, 2, (16, 16), dp_enabled=True)
    with pytest.raises(ConfigError, match=r"privacy\.unit: 'patient' needs data that knows") as e:
        train_local_round(model, small_images, job, seed=0, privacy_state=None)
    assert "\n" not in str(e.value)
    # Not set (the default): the data has no patients, so it runs per image and says so.
    update = _rounds(_job(tmp_path, rounds=1), small_images, None, range(1, 2))[0]
    assert update.privacy_unit == update.privacy_state.unit == "image"


def test_a_job_keeps_one_unit_and_a_site_needs_more_patients_than_one_step(tmp_path, small_images):
    job = _job(tmp_path, rounds=2)
    per_image = _rounds(job, small_images, None, range(1, 2))[0].privacy_state
    with pytest.raises(ConfigError, match="accounted per image, this round would be per patient"):
        _rounds(job, _with_patients(small_images, 4), per_image, range(2, 3))
    few = _with_patients(small_images.subset(np.arange(12)), 4)  # 3 patients, batch 20 images
    with pytest.raises(ConfigError, match=r"train\.batch_size: 20 images per step .* only 3"):
        _rounds(job, few, None, range(1, 2))
