"""The site's privacy ledger: every DP round it took part in, over every job, in SQLite.

The ledger belongs to the hospital: it lives in the site's state folder, it is append-only
(SQLite triggers refuse UPDATE and DELETE; each round is one transaction), and it is what the
site checks its budget against before it trains. Epsilon accumulates over rounds *and* jobs:
the accountant histories of all rounds on this site's data are composed with Opacus' RDP
accountant (composition across different noise levels and sample rates is exact in RDP),
then converted to (epsilon, delta).
"""

import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from opacus.accountants import RDPAccountant

from client.sqlite_store import SqliteStore, append_only
from common.errors import MedfedError
from common.privacy import RDP_ORDERS

__all__ = [
    "LEDGER_FILE",
    "AccountingEntry",
    "BudgetExceededError",
    "LedgerRow",
    "PrivacyLedger",
    "composed_epsilon",
    "round_entries",
]

#: The ledger's file in the site's state folder.
LEDGER_FILE = "privacy-ledger.sqlite"

#: (noise multiplier, sample rate, steps): one Opacus accountant history entry.
AccountingEntry = tuple[float, float, int]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS rounds (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    recorded_at REAL NOT NULL,
    site TEXT NOT NULL,
    job TEXT NOT NULL,
    run_id TEXT NOT NULL,
    round INTEGER NOT NULL,
    noise_multiplier REAL NOT NULL,
    sample_rate REAL NOT NULL,
    steps INTEGER NOT NULL,
    delta REAL NOT NULL,
    epsilon_job REAL NOT NULL,
    epsilon_total REAL NOT NULL
);
""" + append_only("rounds", "the privacy ledger")


class BudgetExceededError(MedfedError):
    """A round would take the site past its epsilon budget: the site refuses to train."""


@dataclass(frozen=True)
class LedgerRow:
    """One accounting entry of one round, with the epsilon spent after it."""

    recorded_at: float
    job: str
    run_id: str
    round: int
    noise_multiplier: float
    sample_rate: float
    steps: int
    delta: float
    epsilon_job: float
    epsilon_total: float


def round_entries(
    before: list[AccountingEntry], after: list[AccountingEntry]
) -> list[AccountingEntry]:
    """The accounting a round added: ``after`` minus ``before`` (Opacus merges equal steps)."""
    added = []
    for index, (noise, rate, steps) in enumerate(after):
        previous = before[index][2] if index < len(before) else 0
        if steps > previous:
            added.append((noise, rate, steps - previous))
    return added


def composed_epsilon(entries: Iterable[AccountingEntry], delta: float) -> float:
    """Epsilon at ``delta`` of all ``entries`` composed (RDP), 0 for none."""
    history = [(float(n), float(q), int(s)) for n, q, s in entries if s > 0]
    if not history:
        return 0.0
    accountant = RDPAccountant()
    accountant.history = history
    return float(accountant.get_epsilon(delta=delta, alphas=RDP_ORDERS))


class PrivacyLedger(SqliteStore):
    """Append-only record of the site's DP rounds in ``path`` (SQLite)."""

    def __init__(self, path: Path, site: str) -> None:
        super().__init__(path, _SCHEMA)
        self.site = site

    def rows(self) -> list[LedgerRow]:
        """Every entry for this site, oldest first."""
        with self.connection() as db:
            found = db.execute(
                "SELECT recorded_at, job, run_id, round, noise_multiplier, sample_rate, steps,"
                " delta, epsilon_job, epsilon_total FROM rounds WHERE site = ? ORDER BY id",
                (self.site,),
            ).fetchall()
        return [LedgerRow(*row) for row in found]

    def history(self) -> list[AccountingEntry]:
        """All accounting entries of this site, every job."""
        return [(r.noise_multiplier, r.sample_rate, r.steps) for r in self.rows()]

    def spent(self, delta: float) -> float:
        """Epsilon spent on this site's data so far, over every job, at ``delta``."""
        return composed_epsilon(self.history(), delta)

    def check(self, planned: Iterable[AccountingEntry], delta: float, max_epsilon: float) -> float:
        """Projected total epsilon after the ``planned`` round; raise if above ``max_epsilon``."""
        history = self.history()
        projected = composed_epsilon([*history, *planned], delta)
        if projected > max_epsilon:
            jobs = len({row.run_id for row in self.rows()})
            raise BudgetExceededError(
                f"site {self.site} refuses this round: it would bring the privacy spent on its "
                f"data to epsilon {projected:.2f} (delta {delta:g}), above its limit "
                f"{max_epsilon:g}; spent so far {composed_epsilon(history, delta):.2f} "
                f"over {jobs} job(s)"
            )
        return projected

    def record(
        self,
        job: str,
        run_id: str,
        server_round: int,
        entries: Iterable[AccountingEntry],
        delta: float,
        epsilon_job: float,
    ) -> float:
        """Append this round's accounting entries in one transaction; returns the new total."""
        entries = list(entries)
        total = composed_epsilon([*self.history(), *entries], delta)
        now = time.time()
        with self.connection() as db:
            db.executemany(
                "INSERT INTO rounds (recorded_at, site, job, run_id, round, noise_multiplier,"
                " sample_rate, steps, delta, epsilon_job, epsilon_total)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [
                    (now, self.site, job, run_id, server_round, n, q, s, delta, epsilon_job, total)
                    for n, q, s in entries
                ],
            )
        return total
