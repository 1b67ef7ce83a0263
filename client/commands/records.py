"""`medfed-site privacy` and `medfed-site audit`: read the site's own records."""

import datetime
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from client.audit_log import AuditLog
from client.audit_mod import AUDIT_FILE
from client.privacy_ledger import LEDGER_FILE, PrivacyLedger
from client.site_node import SiteKit
from common.cli_support import configure_logging, user_errors
from common.errors import ConfigError

__all__ = ["audit", "privacy"]

StateOption = Annotated[Path, typer.Option(help="The site node's state folder.")]
DEFAULT_STATE = Path("site-state")


def _time(stamp: float) -> str:
    return datetime.datetime.fromtimestamp(stamp).strftime("%Y-%m-%d %H:%M:%S")


def _existing(path: Path) -> Path:
    if not path.is_file():
        raise ConfigError(str(path), "not found: has this site node trained yet (--state)?")
    return path


def privacy(
    kit: Annotated[Path, typer.Option(help="This site's startup kit (for its name and limit).")],
    state: StateOption = DEFAULT_STATE,
    delta: Annotated[float, typer.Option(help="Delta at which to report the total.")] = 1e-5,
) -> None:
    """Print every DP round this site took part in and the epsilon spent, against its limit."""
    configure_logging(False)
    with user_errors():
        site = SiteKit.read(kit)
        ledger = PrivacyLedger(_existing(state / LEDGER_FILE), site.name)
        rows = ledger.rows()
        spent = ledger.spent(delta)
    table = Table(title=f"privacy ledger of {site.name}")
    for column in ("time", "job", "run", "round", "noise", "sample rate", "steps",
                   "epsilon (job)", "epsilon (all jobs)"):  # fmt: skip
        table.add_column(column)
    for row in rows:
        table.add_row(
            _time(row.recorded_at), row.job, row.run_id, str(row.round),
            f"{row.noise_multiplier:.3f}", f"{row.sample_rate:.4f}", str(row.steps),
            f"{row.epsilon_job:.2f}", f"{row.epsilon_total:.2f}",
        )  # fmt: skip
    console = Console()
    console.print(table)
    jobs = len({row.run_id for row in rows})
    console.print(
        f"spent epsilon {spent:.2f} at delta {delta:g} over {jobs} job(s); "
        f"limit {site.max_epsilon:g}; left {max(0.0, site.max_epsilon - spent):.2f}"
    )


def audit(state: StateOption = DEFAULT_STATE) -> None:
    """Print the audit trail (jobs received, messages sent) and check its hash chain."""
    configure_logging(False)
    with user_errors():
        log = AuditLog(_existing(state / AUDIT_FILE))
        entries = log.entries()
        report = log.verify()
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
        return
    console.print(f"[bold red]hash chain BROKEN:[/] {report.problem}")
    raise typer.Exit(1)
