import pytest
from opacus.accountants import RDPAccountant

from common.data.arrays import ImageArrays
from common.federation_job import FederationJob
from common.local_training import train_local_round
from common.models import build_model
from common.privacy import RDP_ORDERS, PrivacyState


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
    assert update.num_examples == len(small_images)  # samples, not batches
