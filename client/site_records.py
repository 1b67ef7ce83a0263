"""The site's two records checked together: each chain and head, and ledger against audit log.

Every settled ledger round must have the audit entry of the training reply that carried it
(same run and round, a successful ``train`` message): deleting a round from one record but
not the other shows here even where each chain alone still verifies.
"""

from dataclasses import dataclass
from pathlib import Path

from client.audit_log import AuditLog
from client.audit_mod import AUDIT_FILE
from client.integrity_key import read_integrity_key
from client.privacy_ledger import LEDGER_FILE, PrivacyLedger
from common.errors import RecordsBrokenError

__all__ = ["RecordsReport", "SiteRecordsTamperedError", "check_site_records", "require_intact"]


class SiteRecordsTamperedError(RecordsBrokenError):
    """The site's ledger or audit log fails verification: the node refuses to start."""


@dataclass(frozen=True)
class RecordsReport:
    """What verifying the state folder found: one line per problem, none when intact."""

    ledger_rows: int
    audit_entries: int
    problems: tuple[str, ...]
    authenticated: bool

    @property
    def intact(self) -> bool:
        """Whether both records verify and agree."""
        return not self.problems


def check_site_records(state: Path, site: str, key_file: Path | None) -> RecordsReport:
    """Verify the ledger and audit log in ``state`` (with the key in ``key_file`` if given)."""
    key = None if key_file is None else read_integrity_key(key_file)
    problems: list[str] = []
    ledger_rows, audit_entries, authenticated = 0, 0, key is not None
    trained: set[tuple[str, int]] = set()
    audit_path = state / AUDIT_FILE
    if audit_path.is_file():
        log = AuditLog(audit_path, key=key)
        report = log.verify()
        audit_entries = report.entries
        if not report.intact:
            problems.append(f"{audit_path}: {report.problem}")
        trained = {
            (entry.run_id, entry.round)
            for _, entry, _, _ in log.entries()
            if entry.direction == "out" and entry.kind.startswith("train") and not entry.detail
        }
    ledger_path = state / LEDGER_FILE
    if ledger_path.is_file():
        ledger = PrivacyLedger(ledger_path, site, key=key)
        report = ledger.verify()
        ledger_rows = report.entries
        if not report.intact:
            problems.append(f"{ledger_path}: {report.problem}")
        settled = sorted(
            {(row.run_id, row.round) for row in ledger.rows() if row.kind == "spent"} - trained
        )
        if settled:
            rounds = ", ".join(f"run {run} round {rnd}" for run, rnd in settled)
            problems.append(f"ledger rounds without their audit entry: {rounds}")
    return RecordsReport(ledger_rows, audit_entries, tuple(problems), authenticated)


def require_intact(state: Path, site: str, key_file: Path) -> RecordsReport:
    """:func:`check_site_records`, raising with every problem named if any is found."""
    report = check_site_records(state, site, key_file)
    if not report.intact:
        raise SiteRecordsTamperedError(
            f"{state}: the site's records fail verification: {'; '.join(report.problems)}"
        )
    return report
