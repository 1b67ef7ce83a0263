"""`medfed-site privacy`, `audit` and `check` as a script runs them: JSON on stdout, exit codes.

Real subprocesses on real SQLite records and a real DICOM folder; stdout must parse as JSON
whole (logs and progress go to stderr).
"""

import json
import os
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from warm_command_lines import run_command_line

from client.audit_log import AuditEntry, AuditLog
from client.audit_mod import AUDIT_FILE
from client.privacy_ledger import LEDGER_FILE, BudgetExceededError, PrivacyLedger
from client.site_limits import SiteLimits
from client.site_records import SiteRecordsTamperedError
from common.errors import ConfigError, is_budget_refusal
from common.exit_codes import ExitCode
from common.federation_job import FederationJob

KEY = bytes(range(32))


def _site(*args: str) -> tuple[int, Any, str]:
    """Exit code, stdout parsed as JSON (the whole of it), stderr."""
    env = {**os.environ, "COLUMNS": "200"}
    result = run_command_line("medfed-site", *args, "--format", "json", timeout=300, env=env)
    return result.returncode, json.loads(result.stdout), result.stderr


def _kit(tmp_path: Path) -> Path:
    kit = tmp_path / "kit"
    kit.mkdir()
    (kit / "site.toml").write_text(
        '[site]\nname = "hospital-a"\nsuperlink = "x:1"\n[limits]\nmax-epsilon = 8\n'
    )
    (kit / "ca.crt").write_text("-")
    (kit / "site.key").write_text("-")
    (kit / "integrity.key").write_text(KEY.hex())
    (kit / "integrity.key").chmod(0o600)
    return kit


def _records(state: Path) -> None:
    """Three trained rounds, as a site node writes them: a ledger row and an audit entry each."""
    ledger = PrivacyLedger(state / LEDGER_FILE, "hospital-a", key=KEY)
    log = AuditLog(state / AUDIT_FILE, key=KEY)
    for server_round in (1, 2, 3):
        ledger.record("job", "run-1", server_round, [(1.0, 0.05, 10)], 1e-5, 0.5)
        log.append(AuditEntry(1.0, "out", "run-1", "job", server_round, "train", 1, "0" * 64,
                              0.5, ""))  # fmt: skip


def test_privacy_and_audit_report_intact_records_as_json(tmp_path: Path) -> None:
    kit, state = _kit(tmp_path), tmp_path / "state"
    _records(state)
    code, privacy, _ = _site("privacy", "--kit", str(kit), "--state", str(state))
    assert code == 0
    assert privacy["site"] == "hospital-a" and privacy["max_epsilon"] == 8
    assert privacy["unit"] == "image"  # site.toml does not require patients
    assert privacy["jobs"] == 1 and len(privacy["rounds"]) == 3
    assert 0 < privacy["spent_epsilon"] < 8
    assert privacy["left_epsilon"] == pytest.approx(8 - privacy["spent_epsilon"])
    assert {row["round"] for row in privacy["rounds"]} == {1, 2, 3}
    assert privacy["verification"] == {
        "intact": True, "authenticated": True, "ledger_rows": 6, "audit_entries": 3,
        "problems": [],
    }  # fmt: skip
    assert "error" not in privacy

    code, audit, _ = _site("audit", "--kit", str(kit), "--state", str(state))
    assert code == 0
    assert [(e["id"], e["round"], e["kind"]) for e in audit["entries"]] == [
        (1, 1, "train"), (2, 2, "train"), (3, 3, "train"),
    ]  # fmt: skip
    assert audit["chain"] == {"intact": True, "entries": 3, "problem": None}
    assert audit["verification"]["intact"]


@pytest.mark.parametrize("command", ["privacy", "audit"])
def test_a_broken_chain_exits_records_broken_with_the_report(tmp_path: Path, command: str) -> None:
    kit, state = _kit(tmp_path), tmp_path / "state"
    _records(state)
    with sqlite3.connect(state / AUDIT_FILE) as db:  # someone edits an entry past the guards
        db.execute("DROP TRIGGER audit_no_update")
        db.execute("UPDATE audit SET bytes = 999 WHERE id = 2")
    code, report, stderr = _site(command, "--kit", str(kit), "--state", str(state))
    assert code == ExitCode.RECORDS_BROKEN == 6
    assert report["error"]["code"] == 6 and report["error"]["kind"] == "records_broken"
    assert str(state / AUDIT_FILE) in report["error"]["message"]
    assert report["verification"]["intact"] is False and report["verification"]["problems"]
    assert "records fail verification" in stderr
    if command == "audit":
        assert report["chain"]["intact"] is False and "2" in report["chain"]["problem"]


def test_missing_records_are_a_config_error_object(tmp_path: Path) -> None:
    code, report, _ = _site("audit", "--state", str(tmp_path / "nowhere"))
    assert code == ExitCode.CONFIG_ERROR
    assert set(report) == {"error"} and report["error"]["kind"] == "config_error"
    assert "nowhere" in report["error"]["message"]


def test_check_writes_its_report_as_json_on_stdout(hospital_export, tmp_path: Path) -> None:
    export, labels, _ = hospital_export
    code, report, stderr = _site("check", "--data", str(export), "--labels", str(labels))
    assert code == 0, stderr
    assert report["files_seen"] == 31 and report["images_used"] == 29
    assert report["images_per_modality"] == {"CT": 29}
    assert len(report["skipped_files"]) == 2 and "error" not in report


def test_check_without_a_usable_image_exits_data_error_with_the_report(tmp_path: Path) -> None:
    folder = tmp_path / "export"
    folder.mkdir()
    (folder / "notes.txt").write_text("not an image")
    code, report, _ = _site("check", "--data", str(folder))
    assert code == ExitCode.DATA_ERROR == 3
    assert report["files_seen"] == 1 and report["error"]["kind"] == "data_error"
    assert "no usable image among 1 files" in report["error"]["message"]


def test_site_refusals_carry_their_exit_codes_and_the_budget_mark(tmp_path: Path) -> None:
    """The coordinator tells a budget refusal by its text: both kinds carry the mark."""
    ledger = PrivacyLedger(tmp_path / LEDGER_FILE, "hospital-a")
    with pytest.raises(BudgetExceededError) as spent:
        ledger.reserve("job", "run-1", 1, [(0.3, 0.5, 100)], 1e-5, 1.0)
    assert spent.value.exit_code == ExitCode.BUDGET_REFUSED
    assert is_budget_refusal(str(spent.value))
    limits = SiteLimits(data=tmp_path, name="hospital-a", max_epsilon=1.0)
    with pytest.raises(ConfigError) as asked:  # a job asking epsilon 8 of a site allowing 1
        limits.check(FederationJob())
    assert is_budget_refusal(str(asked.value))
    assert SiteRecordsTamperedError("x").exit_code == ExitCode.RECORDS_BROKEN
