"""The site's audit trail: hash-chained, append-only, checked after tampering (real SQLite)."""

import sqlite3
from pathlib import Path

import pytest

from client.audit_log import AuditEntry, AuditLog


def _entry(i: int, direction: str = "out") -> AuditEntry:
    return AuditEntry(
        1_700_000_000.0 + i, direction, "run-1", "job", i, "train", 1000 + i, f"{i:064x}",
        0.5 * i, "",
    )  # fmt: skip


@pytest.fixture
def log(tmp_path: Path) -> AuditLog:
    audit = AuditLog(tmp_path / "audit.sqlite")
    for i in range(1, 6):
        audit.append(_entry(i, "in" if i == 1 else "out"))
    return audit


def _tamper(log: AuditLog, statement: str) -> None:
    """What someone editing the file could do: drop the guards, then change the table."""
    with sqlite3.connect(log.path) as db:
        db.execute("DROP TRIGGER audit_no_update")
        db.execute("DROP TRIGGER audit_no_delete")
        db.execute(statement)


def test_the_chain_is_intact_and_survives_a_restart(log: AuditLog) -> None:
    reopened = AuditLog(log.path)
    assert reopened.verify().intact
    reopened.append(_entry(6))
    report = AuditLog(log.path).verify()
    assert report.intact and report.entries == 6
    assert reopened.has_job("run-1") and not reopened.has_job("run-2")


def test_sql_edits_are_refused(log: AuditLog) -> None:
    with sqlite3.connect(log.path) as db, pytest.raises(sqlite3.DatabaseError, match="append-only"):
        db.execute("UPDATE audit SET bytes = 1 WHERE id = 3")


@pytest.mark.parametrize(
    ("statement", "problem"),
    [
        ("UPDATE audit SET bytes = 1 WHERE id = 3", "entry 3: content was modified"),
        ("UPDATE audit SET epsilon = 0.1 WHERE id = 4", "entry 4: content was modified"),
        ("DELETE FROM audit WHERE id = 2", "entries 2..2 missing"),
        ("DELETE FROM audit WHERE id >= 4", "entries 4..5 cut off the end"),
    ],
)
def test_a_modified_or_removed_line_is_detected(
    log: AuditLog, statement: str, problem: str
) -> None:
    _tamper(log, statement)
    report = log.verify()
    assert not report.intact
    assert report.problem == problem
