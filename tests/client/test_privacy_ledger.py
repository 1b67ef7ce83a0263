"""The site's privacy ledger: real Opacus training, real SQLite."""

import json
import multiprocessing
import os
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from opacus.accountants import RDPAccountant
from typer.testing import CliRunner

from client.audit_log import AuditEntry, AuditLog
from client.audit_mod import AUDIT_FILE
from client.cli import app as site_app
from client.data_identity import data_identity
from client.hash_chain import GENESIS, HEAD_SCHEMA, link, store_head
from client.privacy_ledger import (
    LEDGER_FILE,
    BudgetExceededError,
    PrivacyLedger,
    composed_epsilon,
    job_units,
    round_entries,
)
from common.config import PrivacyConfig, TrainConfig
from common.data.loading import load_dataset
from common.federation_job import FederationJob
from common.local_training import train_local_round
from common.models import build_model
from common.privacy.accounting import RDP_ORDERS
from common.privacy.image_dp import planned_round
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
        for statement in ("UPDATE ledger SET steps = 0", "DELETE FROM ledger"):
            with pytest.raises(sqlite3.DatabaseError, match="append-only"):
                db.execute(statement)
    assert [row.steps for row in ledger.rows()] == [10]


# -- keyed by the data, reserved in one transaction --------------------------------------------

ROUND = (1.0, 0.05, 50)  # one planned round: noise 1.0, sample rate 0.05, 50 steps


def test_renaming_the_site_keeps_the_spent_budget(tmp_path: Path) -> None:
    state = tmp_path / "site-state"
    PrivacyLedger(state / LEDGER_FILE, "hospital-a").record("job", "run-1", 1, [ROUND], DELTA, 1.0)
    renamed = PrivacyLedger(state / LEDGER_FILE, "hospital-a-2027")  # new kit, new name
    assert renamed.spent(DELTA) == pytest.approx(composed_epsilon([ROUND], DELTA))
    assert renamed.data_id == (state / "data-identity").read_text().strip()
    other_data = PrivacyLedger(tmp_path / "other-state" / LEDGER_FILE, "hospital-a")
    assert other_data.spent(DELTA) == 0.0 and other_data.data_id != renamed.data_id


def test_an_unsettled_reservation_stays_spent_and_a_settled_one_counts_what_ran(
    tmp_path: Path,
) -> None:
    ledger = PrivacyLedger(tmp_path / LEDGER_FILE, "hospital-a")
    crashed = ledger.reserve("job", "run-1", 1, [ROUND], DELTA, 100.0)
    assert crashed.projected_epsilon == pytest.approx(composed_epsilon([ROUND], DELTA))
    assert [row.kind for row in ledger.rows()] == ["reserved"]  # never settled: counted
    held = ledger.reserve("job", "run-1", 2, [ROUND], DELTA, 100.0)
    ran = (1.0, 0.05, 30)  # fewer steps than planned (empty Poisson batches)
    total = ledger.settle(held, [ran], 0.7)
    assert total == pytest.approx(composed_epsilon([ROUND, ran], DELTA))
    assert [(row.round, row.kind, row.steps) for row in ledger.rows()] == [
        (1, "reserved", 50), (2, "spent", 30),
    ]  # fmt: skip


def _reserve_until_refused(path: Path, start: Any, results: Any) -> None:
    ledger = PrivacyLedger(path, "hospital-a")
    start.wait()
    granted = 0
    while True:
        try:
            ledger.reserve("job", f"run-{os.getpid()}", granted, [ROUND], DELTA, LIMIT)
        except BudgetExceededError:
            break
        granted += 1
    results.put(granted)


LIMIT = 6.0


def test_two_processes_reserving_at_once_never_pass_the_budget_together(tmp_path: Path) -> None:
    path = tmp_path / LEDGER_FILE
    PrivacyLedger(path, "hospital-a")  # create file and data identity before the race
    fits = next(n for n in range(1, 1000) if composed_epsilon([ROUND] * n, DELTA) > LIMIT) - 1
    context = multiprocessing.get_context("fork")
    start, results = context.Barrier(2), context.Queue()
    workers = [
        context.Process(target=_reserve_until_refused, args=(path, start, results))
        for _ in range(2)
    ]
    for worker in workers:
        worker.start()
    granted = [results.get(timeout=60) for _ in workers]
    for worker in workers:
        worker.join(timeout=10)
    assert sum(granted) == fits  # not one reservation more than the budget holds
    assert PrivacyLedger(path, "hospital-a").spent(DELTA) <= LIMIT


def test_a_job_asking_a_loose_delta_is_still_accounted_at_the_sites_delta(tmp_path: Path) -> None:
    """The ledger reports at the delta it is asked with: the site passes its own (site_client)."""
    ledger = PrivacyLedger(tmp_path / LEDGER_FILE, "hospital-a")
    ledger.record("job", "run-1", 1, [ROUND], DELTA, 1.0)
    assert ledger.rows()[0].delta == DELTA
    assert ledger.spent(DELTA) > ledger.spent(0.5)  # what a loose job delta would hide


# A ledger as written before rows recorded their unit (the schema of 2026-11-29).
_OLD_FIELDS = (
    "recorded_at", "data_id", "site", "job", "run_id", "round", "kind", "reservation",
    "noise_multiplier", "sample_rate", "steps", "delta", "epsilon_job", "epsilon_total",
)  # fmt: skip
_OLD_SCHEMA = f"""
CREATE TABLE ledger (
    id INTEGER PRIMARY KEY AUTOINCREMENT, recorded_at REAL NOT NULL, data_id TEXT NOT NULL,
    site TEXT NOT NULL, job TEXT NOT NULL, run_id TEXT NOT NULL, round INTEGER NOT NULL,
    kind TEXT NOT NULL, reservation TEXT NOT NULL, noise_multiplier REAL NOT NULL,
    sample_rate REAL NOT NULL, steps INTEGER NOT NULL, delta REAL NOT NULL, epsilon_job REAL,
    epsilon_total REAL NOT NULL, prev_hash TEXT NOT NULL, hash TEXT NOT NULL
);
{HEAD_SCHEMA}
"""


def _old_ledger(path: Path, data_id: str, key: bytes) -> None:
    """Two settled rounds of one job, hashed and authenticated as the old ledger did."""
    with sqlite3.connect(path) as db:
        db.executescript(_OLD_SCHEMA)
        prev = GENESIS
        kinds = ("reserved", "spent")
        for kind in kinds:
            values = (1.0, data_id, "hospital-a", "old-job", "run-old", 1, kind, "t1",
                      1.0, 0.05, 10, DELTA, None if kind == "reserved" else 0.5, 0.5)  # fmt: skip
            fields = dict(zip(_OLD_FIELDS, values, strict=True))
            digest = link(prev, fields)
            db.execute(
                f"INSERT INTO ledger ({', '.join(_OLD_FIELDS)}, prev_hash, hash) "
                f"VALUES ({', '.join('?' * 16)})",
                (*values, prev, digest),
            )
            prev = digest
        store_head(db, key, "ledger", len(kinds), prev)


def test_each_job_records_its_unit_and_old_ledgers_stay_readable(tmp_path: Path) -> None:
    key = bytes(range(32))
    state = tmp_path / "state"
    state.mkdir()
    path = state / LEDGER_FILE
    _old_ledger(path, data_identity(state), key)
    ledger = PrivacyLedger(path, "hospital-a", key=key)  # adds the unit column
    assert ledger.verify().intact and ledger.verify().authenticated
    assert [row.unit for row in ledger.rows()] == [None]
    ledger.record("patients", "run-p", 1, [ROUND], DELTA, 1.0, unit="patient")
    ledger.record("images", "run-i", 1, [ROUND], DELTA, 1.0, unit="image")
    reopened = PrivacyLedger(path, "hospital-a", key=key)
    assert reopened.verify().intact and reopened.verify().authenticated
    assert job_units(reopened.rows()) == {"run-old": None, "run-p": "patient", "run-i": "image"}
    with sqlite3.connect(path) as db:  # the unit is in the chain: editing it is detected
        db.execute("DROP TRIGGER ledger_no_update")
        db.execute("UPDATE ledger SET unit = 'patient' WHERE run_id = 'run-i'")
    assert "modified" in PrivacyLedger(path, "hospital-a", key=key).verify().problem


def test_site_privacy_shows_each_jobs_unit(tmp_path: Path) -> None:
    key = bytes(range(32))
    kit, state = tmp_path / "kit", tmp_path / "state"
    kit.mkdir()
    state.mkdir()
    (kit / "site.toml").write_text(
        '[site]\nname = "hospital-a"\nsuperlink = "x:1"\n[limits]\nmax-epsilon = 8\n'
    )
    (kit / "ca.crt").write_text("-")
    (kit / "site.key").write_text("-")
    (kit / "integrity.key").write_text(key.hex())
    (kit / "integrity.key").chmod(0o600)
    _old_ledger(state / LEDGER_FILE, data_identity(state), key)
    ledger = PrivacyLedger(state / LEDGER_FILE, "hospital-a", key=key)
    ledger.record("patients", "run-p", 1, [ROUND], DELTA, 1.0, unit="patient")
    ledger.record("images", "run-i", 1, [ROUND], DELTA, 1.0, unit="image")
    log = AuditLog(state / AUDIT_FILE, key=key)  # every ledger round audited, as a site does
    for job, run in (("old-job", "run-old"), ("patients", "run-p"), ("images", "run-i")):
        log.append(AuditEntry(1.0, "out", run, job, 1, "train", 1, "0" * 64, 1.0, ""))
    common = ["privacy", "--kit", str(kit), "--state", str(state)]
    result = CliRunner().invoke(site_app, [*common, "--format", "json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["job_units"] == [
        {"job": "old-job", "run_id": "run-old", "unit": None},
        {"job": "patients", "run_id": "run-p", "unit": "patient"},
        {"job": "images", "run_id": "run-i", "unit": "image"},
    ]
    assert [r["unit"] for r in report["rounds"]] == [None, "patient", "image"]
    text = CliRunner().invoke(site_app, common, env={"COLUMNS": "250"}).stdout
    assert "job patients (run run-p): DP-SGD per patient" in text
    assert "job images (run run-i): DP-SGD per image" in text
    assert "job old-job (run run-old): DP-SGD unit unknown (written before ledgers" in text
