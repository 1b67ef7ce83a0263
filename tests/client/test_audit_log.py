"""The site's records: hash-chained, heads authenticated, cross-checked after tampering (SQLite)."""

import sqlite3
from pathlib import Path

import pytest
from typer.testing import CliRunner

from client.audit_log import AuditEntry, AuditLog
from client.audit_mod import AUDIT_FILE
from client.cli import app
from client.hash_chain import GENESIS, link
from client.privacy_ledger import LEDGER_FILE, LedgerTamperedError, PrivacyLedger
from client.site_records import SiteRecordsTamperedError, check_site_records, require_intact


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


# -- authenticated heads, cross-check with the ledger, unreadable files --------------------------

KEY = bytes(range(32))


def _keyed_records(state: Path) -> tuple[PrivacyLedger, AuditLog]:
    ledger = PrivacyLedger(state / LEDGER_FILE, "hospital-a", key=KEY)
    log = AuditLog(state / AUDIT_FILE, key=KEY)
    for server_round in (1, 2, 3):
        ledger.record("job", "run-1", server_round, [(1.0, 0.05, 10)], 1e-5, 0.5)
        log.append(AuditEntry(1.0, "out", "run-1", "job", server_round, "train", 1, "0" * 64,
                              0.5, ""))  # fmt: skip
    return ledger, log


def _key_file(tmp_path: Path) -> Path:
    path = tmp_path / "kit" / "integrity.key"
    path.parent.mkdir()
    path.write_text(KEY.hex())
    path.chmod(0o600)
    return path


def _sql(path: Path, *statements: str) -> None:
    with sqlite3.connect(path) as db:
        for statement in statements:
            db.execute(statement)


def test_intact_keyed_records_verify_and_cross_check(tmp_path: Path) -> None:
    _keyed_records(tmp_path / "state")
    report = require_intact(tmp_path / "state", "hospital-a", _key_file(tmp_path))
    assert report.authenticated and (report.ledger_rows, report.audit_entries) == (6, 3)


def test_ledger_trigger_dropped_and_rows_deleted_is_detected(tmp_path: Path) -> None:
    ledger, _ = _keyed_records(tmp_path / "state")
    _sql(ledger.path, "DROP TRIGGER ledger_no_delete", "DELETE FROM ledger WHERE id >= 5",
         "UPDATE sqlite_sequence SET seq = 4 WHERE name = 'ledger'")  # fmt: skip
    assert "authenticated head is entry 6, the file ends at entry 4" in ledger.verify().problem
    with pytest.raises(LedgerTamperedError, match="refuses to train"):
        ledger.reserve("job", "run-2", 1, [(1.0, 0.05, 10)], 1e-5, 100.0)  # no training
    _sql(ledger.path, "DELETE FROM ledger WHERE id = 2")
    assert ledger.verify().problem == "entries 2..2 missing"  # middle rows: chain alone shows
    with pytest.raises(SiteRecordsTamperedError, match=str(ledger.path)):
        require_intact(tmp_path / "state", "hospital-a", _key_file(tmp_path))


def test_last_audit_entry_removed_with_sequence_lowered_is_detected(tmp_path: Path) -> None:
    _, log = _keyed_records(tmp_path / "state")
    _sql(log.path, "DROP TRIGGER audit_no_delete", "DELETE FROM audit WHERE id = 3",
         "UPDATE sqlite_sequence SET seq = 2 WHERE name = 'audit'")  # fmt: skip
    assert AuditLog(log.path).verify().intact  # the chain alone cannot tell
    assert "head is entry 3, the file ends at entry 2" in log.verify().problem
    report = check_site_records(tmp_path / "state", "hospital-a", _key_file(tmp_path))
    assert "ledger rounds without their audit entry: run run-1 round 3" in report.problems


@pytest.mark.parametrize("table", ["ledger", "audit"])
def test_a_chain_recomputed_without_the_key_is_detected(tmp_path: Path, table: str) -> None:
    ledger, log = _keyed_records(tmp_path / "state")
    store = ledger if table == "ledger" else log
    with sqlite3.connect(store.path) as db:  # rewrite entry 1, re-link everything after it
        db.execute(f"DROP TRIGGER {table}_no_update")
        column = "steps" if table == "ledger" else "bytes"
        db.execute(f"UPDATE {table} SET {column} = 0 WHERE id = 1")
        prev = GENESIS
        names = [r[1] for r in db.execute(f"PRAGMA table_info({table})")][1:-2]
        for row in db.execute(f"SELECT * FROM {table} ORDER BY id").fetchall():
            digest = link(prev, dict(zip(names, row[1:-2], strict=True)))
            db.execute(f"UPDATE {table} SET prev_hash = ?, hash = ? WHERE id = ?",
                       (prev, digest, row[0]))  # fmt: skip
            prev = digest
        forged = "f" * 64  # a MAC needs the key: the best an editor can do is guess
        db.execute("UPDATE chain_head SET hash = ?, mac = ? WHERE chain = ?", (prev, forged, table))
    unkeyed = PrivacyLedger(store.path, "hospital-a") if table == "ledger" else AuditLog(store.path)
    assert unkeyed.verify().intact  # the recomputed chain alone looks fine
    assert "fails its HMAC" in store.verify().problem
    _sql(store.path, f"DELETE FROM chain_head WHERE chain = '{table}'")
    assert "no authenticated chain head" in store.verify().problem
    assert not check_site_records(tmp_path / "state", "hospital-a", _key_file(tmp_path)).intact


@pytest.mark.parametrize("command", ["audit", "privacy"])
def test_a_non_sqlite_record_file_is_one_line_naming_it(tmp_path: Path, command: str) -> None:
    state = tmp_path / "state"
    state.mkdir()
    for name in (AUDIT_FILE, LEDGER_FILE):
        (state / name).write_bytes(b"not a database at all\n" * 100)
    kit = tmp_path / "kit"
    kit.mkdir()
    (kit / "site.toml").write_text(
        '[site]\nname = "a"\nsuperlink = "x:1"\n[limits]\nmax-epsilon = 8\n'
    )
    (kit / "ca.crt").write_text("-")
    (kit / "site.key").write_text("-")
    result = CliRunner().invoke(app, [command, "--state", str(state), "--kit", str(kit)])
    assert (
        result.exit_code != 0
        and result.exception is None
        or isinstance(result.exception, SystemExit)
    )
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and "not a readable SQLite database" in lines[0], result.output
    assert "Traceback" not in result.output
