"""The site's privacy ledger: real Opacus training, real SQLite."""

import sqlite3
from pathlib import Path

import pytest
from opacus.accountants import RDPAccountant

from client.privacy_ledger import (
    BudgetExceededError,
    PrivacyLedger,
    composed_epsilon,
    round_entries,
)
from common.config import PrivacyConfig, TrainConfig
from common.data.loading import load_dataset
from common.federation_job import FederationJob
from common.local_training import train_local_round
from common.models import build_model
from common.privacy import RDP_ORDERS, planned_round
from simulations.synthetic_lesions import write_synthetic_lesions

DELTA = 1e-5


def _train_job(
    data_path: Path, name: str, epsilon: float, rounds: int, ledger: PrivacyLedger
) -> float:
    """Train ``rounds`` DP rounds as a site does, recording each in the ledger; job epsilon."""
    data = load_dataset(data_path).train
    job = FederationJob(
        rounds=rounds, train=TrainConfig(batch_size=16),
        privacy=PrivacyConfig(target_epsilon=epsilon, target_delta=DELTA),
    )  # fmt: skip
    state = None
    for server_round in range(1, rounds + 1):
        planned = planned_round(job.privacy, len(data), 16, 1, rounds, state)
        model = build_model(job.model, 1, 2, (32, 32), dp_enabled=True)
        update = train_local_round(model, data, job, seed=server_round, privacy_state=state)
        added = round_entries(state.history if state else [], update.privacy_state.history)
        assert [(n, q) for n, q, _ in added] == [planned[:2]]  # the plan is what Opacus ran
        assert sum(s for *_, s in added) <= planned[2]  # empty Poisson batches take no step
        ledger.record(name, f"run-{name}", server_round, added, DELTA, update.epsilon)
        state = update.privacy_state
    return update.epsilon


@pytest.fixture
def site_data(tmp_path: Path) -> Path:
    return write_synthetic_lesions(tmp_path / "site.npz", n_train=64, n_val=8, n_test=4)


def test_epsilon_accumulates_over_rounds_and_jobs_as_opacus_accounts_it(
    tmp_path: Path, site_data: Path
) -> None:
    ledger = PrivacyLedger(tmp_path / "ledger.sqlite", "hospital-a")
    epsilon_a = _train_job(site_data, "job-a", 3.0, 2, ledger)
    epsilon_b = _train_job(site_data, "job-b", 2.0, 1, ledger)

    # Opacus' own accountant, stepped once per optimiser step of both jobs.
    accountant = RDPAccountant()
    for row in ledger.rows():
        for _ in range(row.steps):
            accountant.step(noise_multiplier=row.noise_multiplier, sample_rate=row.sample_rate)
    expected = accountant.get_epsilon(delta=DELTA, alphas=RDP_ORDERS)

    reopened = PrivacyLedger(tmp_path / "ledger.sqlite", "hospital-a")  # survives a restart
    assert reopened.spent(DELTA) == pytest.approx(expected, rel=1e-9)
    assert reopened.rows()[-1].epsilon_total == pytest.approx(expected, rel=1e-9)
    assert max(epsilon_a, epsilon_b) < expected < epsilon_a + epsilon_b  # RDP beats adding
    per_job = {
        job: composed_epsilon(
            [(r.noise_multiplier, r.sample_rate, r.steps) for r in ledger.rows() if r.job == job],
            DELTA,
        )
        for job in ("job-a", "job-b")
    }
    assert per_job["job-a"] == pytest.approx(epsilon_a, rel=1e-6)
    assert per_job["job-b"] == pytest.approx(epsilon_b, rel=1e-6)
    assert [row.round for row in ledger.rows()] == [1, 2, 1]


def test_a_round_that_would_pass_the_budget_is_refused(tmp_path: Path, site_data: Path) -> None:
    ledger = PrivacyLedger(tmp_path / "ledger.sqlite", "hospital-a")
    _train_job(site_data, "job-a", 3.0, 2, ledger)
    spent = ledger.spent(DELTA)
    next_round = [(1.0, 0.25, 4)]
    projected = ledger.check(next_round, DELTA, max_epsilon=spent + 10)
    assert projected > spent
    with pytest.raises(BudgetExceededError) as refused:
        ledger.check(next_round, DELTA, max_epsilon=spent + 0.01)
    message = str(refused.value)
    assert "hospital-a refuses this round" in message
    assert f"{projected:.2f}" in message and f"{spent:.2f}" in message and "1 job(s)" in message
    assert len(ledger.rows()) == 2  # a refusal records nothing


def test_the_ledger_refuses_edits_and_deletions(tmp_path: Path) -> None:
    ledger = PrivacyLedger(tmp_path / "ledger.sqlite", "hospital-a")
    ledger.record("job", "run-1", 1, [(1.0, 0.1, 10)], DELTA, 0.5)
    with sqlite3.connect(ledger.path) as db:
        for statement in ("UPDATE rounds SET steps = 0", "DELETE FROM rounds"):
            with pytest.raises(sqlite3.DatabaseError, match="append-only"):
                db.execute(statement)
    assert [row.steps for row in ledger.rows()] == [10]
