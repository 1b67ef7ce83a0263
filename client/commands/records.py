"""`medfed-site privacy` and `medfed-site audit`: read the site's own records."""

import datetime
from dataclasses import asdict
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from client.audit_log import AuditLog
from client.audit_mod import AUDIT_FILE
from client.integrity_key import INTEGRITY_KEY_FILE
from client.privacy_ledger import LEDGER_FILE, LedgerRow, PrivacyLedger, job_units
from client.site_node import SiteKit
from client.site_records import RecordsReport, check_site_records
from common.cli_support import (
    FormatOption,
    OutputFormat,
    configure_logging,
    emit_json,
    fail_with_report,
    user_errors,
)
from common.errors import ConfigError
from common.exit_codes import ExitCode

__all__ = ["audit", "privacy"]

StateOption = Annotated[Path, typer.Option(help="The site node's state folder.")]
DEFAULT_STATE = Path("site-state")


def _time(stamp: float) -> str:
    return datetime.datetime.fromtimestamp(stamp).strftime("%Y-%m-%d %H:%M:%S")


def _existing(path: Path) -> Path:
    if not path.is_file():
        raise ConfigError(str(path), "not found: has this site node trained yet (--state)?")
    return path


def _key_file(kit: Path) -> Path | None:
    """The kit's integrity key, or None before the site node first started."""
    path = kit / INTEGRITY_KEY_FILE
    return path if path.exists() else None


#: How a ledger row written before units were recorded shows its unit.
UNKNOWN_UNIT = "unit unknown (written before ledgers recorded units)"


def _jobs(rows: list[LedgerRow]) -> list[dict[str, Any]]:
    """Each job of the ledger (by run) with the privacy unit its DP-SGD protected."""
    names = {row.run_id: row.job for row in rows}
    return [
        {"job": names[run], "run_id": run, "unit": unit} for run, unit in job_units(rows).items()
    ]


def _verification(report: RecordsReport) -> dict[str, Any]:
    """The JSON form of what verifying the records found."""
    return {
        "intact": report.intact,
        "authenticated": report.authenticated,
        "ledger_rows": report.ledger_rows,
        "audit_entries": report.audit_entries,
        "problems": list(report.problems),
    }


def _emit(payload: dict[str, Any], report: RecordsReport) -> None:
    """Write the JSON report; with an ``error`` and exit RECORDS_BROKEN if verification failed."""
    if not report.intact:
        message = f"records fail verification: {'; '.join(report.problems)}"
        fail_with_report(payload, ExitCode.RECORDS_BROKEN, message)
    emit_json(payload)


def _print_verification(console: Console, report: RecordsReport) -> None:
    """Say what verifying the records found; exit RECORDS_BROKEN if anything fails."""
    if report.intact:
        how = (
            "authenticated with the kit's integrity key"
            if report.authenticated
            else ("hash chains only: pass --kit to check the authenticated heads")
        )
        console.print(
            f"records verified: ledger {report.ledger_rows} rows, audit log "
            f"{report.audit_entries} entries, every ledger round audited ({how})"
        )
        return
    for problem in report.problems:
        console.print(f"[bold red]records fail verification:[/] {problem}", highlight=False)
    raise typer.Exit(int(ExitCode.RECORDS_BROKEN))


def privacy(
    kit: Annotated[Path, typer.Option(help="This site's startup kit (for its name and limit).")],
    state: StateOption = DEFAULT_STATE,
    output: FormatOption = OutputFormat.TEXT,
) -> None:
    """Print every DP round on this site's data and the epsilon spent, against its limit.

    Epsilon is reported at the site's own delta (site.toml), whatever each job asked, and with
    its unit: per patient where site.toml requires ``privacy-unit = "patient"`` (every job then
    ran per patient), else per image (the unit every job protects at least). Each job's own
    unit (what its DP-SGD protected, as the ledger recorded it; null for rows of ledgers
    written before units were recorded) is listed per job and per row. JSON keys: site,
    delta, unit, max_epsilon, spent_epsilon, left_epsilon, jobs, job_units (job, run_id, unit
    per job), rounds (one object per ledger row, with its unit), verification (intact,
    authenticated, ledger_rows, audit_entries, problems).
    Exits 6 when the records fail verification.
    """
    configure_logging(False)
    with user_errors(output):
        site = SiteKit.read(kit)
        ledger = PrivacyLedger(_existing(state / LEDGER_FILE), site.name)
        rows = ledger.rows()
        delta = site.delta
        spent = ledger.spent(delta)
        report = check_site_records(state, site.name, _key_file(kit))
    jobs = len({row.run_id for row in rows})
    left = max(0.0, site.max_epsilon - spent)
    if output is OutputFormat.JSON:
        _emit(
            {
                "site": site.name,
                "delta": delta,
                "unit": site.epsilon_unit,
                "max_epsilon": site.max_epsilon,
                "spent_epsilon": spent,
                "left_epsilon": left,
                "jobs": jobs,
                "job_units": _jobs(rows),
                "rounds": [asdict(row) for row in rows],
                "verification": _verification(report),
            },
            report,
        )
        return
    table = Table(title=f"privacy ledger of {site.name}")
    unit = site.epsilon_unit
    for column in ("time", "job", "run", "round", "job's unit", "noise", "sample rate", "steps",
                   f"epsilon per {unit} (job)", f"epsilon per {unit} (all jobs)"):  # fmt: skip
        table.add_column(column)
    for row in rows:
        table.add_row(
            _time(row.recorded_at), row.job, row.run_id, str(row.round),
            row.unit or "unknown",
            f"{row.noise_multiplier:.3f}", f"{row.sample_rate:.4f}", str(row.steps),
            "reserved" if row.epsilon_job is None else f"{row.epsilon_job:.2f}",
            f"{row.epsilon_total:.2f}",
        )  # fmt: skip
    console = Console()
    console.print(table)
    for job in _jobs(rows):
        protected = f"per {job['unit']}" if job["unit"] else UNKNOWN_UNIT
        console.print(f"job {job['job']} (run {job['run_id']}): DP-SGD {protected}")
    console.print(
        f"spent epsilon {spent:.2f} per {unit} at delta {delta:g} over {jobs} job(s); "
        f"limit {site.max_epsilon:g}; left {left:.2f}"
    )
    if unit == "image":
        console.print(
            'per image: site.toml does not require privacy-unit = "patient", so a job may '
            "have run per image; a patient is protected only through group privacy"
        )
    _print_verification(console, report)


def audit(
    state: StateOption = DEFAULT_STATE,
    kit: Annotated[
        Path | None,
        typer.Option(help="This site's startup kit: its integrity key authenticates the records."),
    ] = None,
    output: FormatOption = OutputFormat.TEXT,
) -> None:
    """Print the audit trail, check both records' chains and that every ledger round is audited.

    JSON keys: entries (id and the logged fields of each event), chain (the audit log's own
    chain: intact, entries, problem), verification (both records, as `privacy` gives it).
    Exits 6 when the records fail verification.
    """
    configure_logging(False)
    with user_errors(output):
        site = SiteKit.read(kit) if kit is not None else None
        log = AuditLog(_existing(state / AUDIT_FILE))
        entries = log.entries()
        report = log.verify()
        records = check_site_records(
            state, site.name if site else "this site", _key_file(kit) if kit else None
        )
    if output is OutputFormat.JSON:
        _emit(
            {
                "entries": [{"id": entry_id, **asdict(entry)} for entry_id, entry, _, _ in entries],
                "chain": {
                    "intact": report.intact,
                    "entries": report.entries,
                    "problem": report.problem or None,
                },
                "verification": _verification(records),
            },
            records,
        )
        return
    table = Table(title="audit trail")
    for column in ("#", "time", "dir", "job", "run", "round", "kind", "bytes", "sha256",
                   "epsilon"):  # fmt: skip
        table.add_column(column)
    for entry_id, entry, _, _ in entries:
        table.add_row(
            str(entry_id), _time(entry.recorded_at), entry.direction, entry.job, entry.run_id,
            str(entry.round), entry.kind, str(entry.bytes), entry.sha256[:16],
            "" if entry.epsilon is None else f"{entry.epsilon:.2f}",
        )  # fmt: skip
    console = Console()
    console.print(table)
    if report.intact:
        console.print(f"hash chain intact over {report.entries} entries")
    else:
        console.print(f"[bold red]hash chain BROKEN:[/] {report.problem}", highlight=False)
    _print_verification(console, records)
