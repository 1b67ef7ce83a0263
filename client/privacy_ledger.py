"""The site's privacy ledger: every DP round on its data, over every job, in SQLite.

The ledger belongs to the hospital: it lives in the site's state folder and is keyed by the
identity of the data it protects (:mod:`client.data_identity`), not by the site's name. Rows
are append-only (SQLite triggers refuse UPDATE and DELETE), hash-chained, and the chain's
head is authenticated with the site's integrity key (:mod:`client.hash_chain`).

A round first *reserves* its planned accounting: check and reserve are one ``BEGIN
IMMEDIATE`` transaction, so two concurrent rounds cannot both pass against the same budget.
After training the reservation is *settled* with what Opacus actually ran; a reservation
never settled (a crash mid-round) stays counted as spent. Epsilon accumulates over rounds and
jobs: the accounting entries are composed with Opacus' RDP accountant (composition across
noise levels and sample rates is exact in RDP) and converted at the site's delta.

Each row records the privacy unit its job's DP-SGD protected ("patient" or "image"). Ledgers
written before the unit was recorded gain the column on first open; their rows keep it empty
(unit unknown) and hash as they were written, so their chain still verifies.
"""

from __future__ import annotations  # PrivacyUnit is only named in annotations

import math
import secrets
import sqlite3
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from client.data_identity import data_identity
from client.hash_chain import GENESIS, HEAD_SCHEMA, ChainReport, link, store_head, verify_chain
from client.integrity_key import read_integrity_key
from client.sqlite_store import SqliteStore, append_only
from common.errors import BUDGET_REFUSAL, BudgetRefusedError, RecordsBrokenError

if TYPE_CHECKING:
    from client.site_limits import SiteLimits
    from common.privacy.accounting import PrivacyUnit

__all__ = [
    "LEDGER_FILE",
    "AccountingEntry",
    "BudgetExceededError",
    "LedgerRow",
    "LedgerTamperedError",
    "PrivacyLedger",
    "Reservation",
    "composed_epsilon",
    "job_units",
    "round_entries",
]

#: The ledger's file in the site's state folder.
LEDGER_FILE = "privacy-ledger.sqlite"

#: (noise multiplier, sample rate, steps): one Opacus accountant history entry.
AccountingEntry = tuple[float, float, int]

_TABLE = "ledger"
_RESERVED, _SPENT = "reserved", "spent"
_FIELDS = (
    "recorded_at", "data_id", "site", "job", "run_id", "round", "kind", "reservation",
    "noise_multiplier", "sample_rate", "steps", "delta", "epsilon_job", "epsilon_total", "unit",
)  # fmt: skip
#: Added after the first ledgers were written: NULL in their rows, which hash without it.
_UNIT = "unit"

_SCHEMA = (
    f"""
CREATE TABLE IF NOT EXISTS {_TABLE} (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    recorded_at REAL NOT NULL,
    data_id TEXT NOT NULL,
    site TEXT NOT NULL,
    job TEXT NOT NULL,
    run_id TEXT NOT NULL,
    round INTEGER NOT NULL,
    kind TEXT NOT NULL CHECK (kind IN ('{_RESERVED}', '{_SPENT}')),
    reservation TEXT NOT NULL,
    noise_multiplier REAL NOT NULL,
    sample_rate REAL NOT NULL,
    steps INTEGER NOT NULL,
    delta REAL NOT NULL,
    epsilon_job REAL,
    epsilon_total REAL NOT NULL,
    unit TEXT CHECK (unit IN ('patient', 'image')),
    prev_hash TEXT NOT NULL,
    hash TEXT NOT NULL
);
"""
    + append_only(_TABLE, "the privacy ledger")
    + HEAD_SCHEMA
)


class BudgetExceededError(BudgetRefusedError):
    """A round would take the site past its epsilon budget: the site refuses to train."""


class LedgerTamperedError(RecordsBrokenError):
    """The ledger's chain or authenticated head does not verify: the site refuses to go on."""


@dataclass(frozen=True)
class Reservation:
    """A round's planned accounting, held against the budget until settled."""

    token: str
    projected_epsilon: float


@dataclass(frozen=True)
class LedgerRow:
    """One accounting entry of one round, with the epsilon spent after it.

    ``kind`` is "spent" (settled) or "reserved" (planned and never settled: counted as spent,
    ``epsilon_job`` unknown).
    """

    recorded_at: float
    job: str
    run_id: str
    round: int
    noise_multiplier: float
    sample_rate: float
    steps: int
    delta: float
    epsilon_job: float | None
    epsilon_total: float
    kind: str = _SPENT
    reservation: str = ""
    #: What the job's DP-SGD protected: "patient" or "image"; None in rows written before
    #: ledgers recorded it.
    unit: str | None = None


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
    # RDP composes linearly in steps: entries of equal noise and rate merge exactly, which
    # keeps the cost flat however many rounds the ledger holds.
    steps: dict[tuple[float, float], int] = {}
    for n, q, s in entries:
        if s > 0:
            steps[(float(n), float(q))] = steps.get((float(n), float(q)), 0) + int(s)
    if not steps:
        return 0.0
    # Opacus (and torch under it) only where epsilon is composed: opening the ledger, checking
    # its chain or listing it stays light for `medfed-site start` and the ClientApp's mods.
    from common.privacy.accounting import rdp_epsilon  # noqa: PLC0415

    return rdp_epsilon([(n, q, s) for (n, q), s in steps.items()], delta)


def _accounted(rows: list[LedgerRow]) -> list[LedgerRow]:
    """Spent rows plus reservations never settled (they count as spent), in ledger order."""
    settled = {row.reservation for row in rows if row.kind == _SPENT}
    return [row for row in rows if row.kind == _SPENT or row.reservation not in settled]


def _entry(row: LedgerRow) -> AccountingEntry:
    return (float(row.noise_multiplier), float(row.sample_rate), int(row.steps))


def _ledger_row(fields: dict[str, Any]) -> LedgerRow:
    """A stored row's accounting (``data_id`` and ``site`` say whose it is, not what it cost)."""
    return LedgerRow(**{k: v for k, v in fields.items() if k not in ("data_id", "site")})


def job_units(rows: Iterable[LedgerRow]) -> dict[str, str | None]:
    """Each run's privacy unit (by run id, in ledger order); None for rows without one."""
    units: dict[str, str | None] = {}
    for row in rows:
        units.setdefault(row.run_id, row.unit)
    return units


def _hashed_fields(values: Iterable[Any]) -> dict[str, Any]:
    """A stored row's fields as they were hashed: an empty unit (an older row) was not there."""
    fields = dict(zip(_FIELDS, values, strict=True))
    if fields[_UNIT] is None:
        del fields[_UNIT]
    return fields


class PrivacyLedger(SqliteStore):
    """Append-only, hash-chained record of the DP rounds on one site's data in ``path``.

    ``site`` names the site in messages only; rows are keyed by ``data_id`` (by default the
    identity kept in the ledger's folder, the site's state folder). With ``key`` (the site's
    integrity key) the chain head is authenticated on every write and checked on every read.
    """

    def __init__(
        self, path: Path, site: str, key: bytes | None = None, data_id: str | None = None
    ) -> None:
        super().__init__(path, _SCHEMA)
        self._add_unit_column()
        self.site = site
        self.key = key
        self.data_id = data_id or data_identity(path.parent)

    def _add_unit_column(self) -> None:
        """Give a ledger written before units were recorded its (empty) unit column."""
        with self.connection() as db:
            db.execute("BEGIN IMMEDIATE")  # two site processes opening an old ledger at once
            columns = {row[1] for row in db.execute(f"PRAGMA table_info({_TABLE})")}
            if _UNIT not in columns:
                db.execute(
                    f"ALTER TABLE {_TABLE} ADD COLUMN {_UNIT} TEXT "
                    "CHECK (unit IN ('patient', 'image'))"
                )

    # -- reading ---------------------------------------------------------------------------

    def _all(self, db: sqlite3.Connection) -> list[tuple[int, dict[str, Any], str, str]]:
        # SQLite's values are untyped (Any); _ledger_row gives them their fields' types.
        found = db.execute(
            f"SELECT id, {', '.join(_FIELDS)}, prev_hash, hash FROM {_TABLE} ORDER BY id"
        ).fetchall()
        return [(row[0], _hashed_fields(row[1:-2]), row[-2], row[-1]) for row in found]

    def _mine(self, db: sqlite3.Connection) -> list[LedgerRow]:
        return [
            _ledger_row(fields)
            for _, fields, _, _ in self._all(db)
            if fields["data_id"] == self.data_id
        ]

    def verify(self) -> ChainReport:
        """Recompute the chain and check its authenticated head (with the key)."""
        with self.connection() as db:
            return self._verify(db)

    def _verify(self, db: sqlite3.Connection) -> ChainReport:
        rows = self._all(db)
        report = verify_chain(db, _TABLE, rows, self.key)
        if report.intact:
            others = {str(fields["data_id"]) for _, fields, _, _ in rows} - {self.data_id}
            if others:
                return ChainReport(
                    report.entries, False,
                    f"rows of another data identity ({', '.join(sorted(others))}) than this "
                    f"state folder's {self.data_id}: was data-identity replaced?",
                )  # fmt: skip
        return report

    def _require_intact(self, db: sqlite3.Connection) -> None:
        report = self._verify(db)
        if not report.intact:
            raise LedgerTamperedError(
                f"{self.path}: privacy ledger fails verification ({report.problem}); "
                f"site {self.site} refuses to train until it is restored"
            )

    def rows(self) -> list[LedgerRow]:
        """The accounted entries of this data (settled, or reserved and never settled)."""
        with self.connection() as db:
            return _accounted(self._mine(db))

    def history(self) -> list[AccountingEntry]:
        """All accounting entries on this data, every job."""
        return [(r.noise_multiplier, r.sample_rate, r.steps) for r in self.rows()]

    def spent(self, delta: float) -> float:
        """Epsilon spent on this site's data so far, over every job, at ``delta``."""
        return composed_epsilon(self.history(), delta)

    def check(self, planned: Iterable[AccountingEntry], delta: float, max_epsilon: float) -> float:
        """Projected total epsilon after the ``planned`` round; raise if above ``max_epsilon``.

        Reserves nothing: a round about to train calls :meth:`reserve` instead.
        """
        with self.connection() as db:
            return self._project(self._mine(db), list(planned), delta, max_epsilon)

    def _project(
        self,
        mine: list[LedgerRow],
        planned: list[AccountingEntry],
        delta: float,
        max_epsilon: float,
    ) -> float:
        accounted = _accounted(mine)
        history = [_entry(row) for row in accounted]
        projected = composed_epsilon([*history, *planned], delta)
        if not projected <= max_epsilon:  # also refuses a NaN projection
            jobs = len({row.run_id for row in accounted})
            raise BudgetExceededError(
                f"site {self.site} refuses this round: it would bring the privacy spent on its "
                f"data to epsilon {projected:.2f} (delta {delta:g}), above its limit "
                f"{max_epsilon:g}; spent so far {composed_epsilon(history, delta):.2f} "
                f"over {jobs} job(s); {BUDGET_REFUSAL}"
            )
        return projected

    @classmethod
    def for_site(cls, limits: SiteLimits) -> PrivacyLedger | None:
        """The ledger in ``limits.state_dir`` under the site's integrity key; None without one."""
        if limits.state_dir is None:
            return None
        key = None if limits.integrity_key is None else read_integrity_key(limits.integrity_key)
        return cls(limits.state_dir / LEDGER_FILE, limits.name, key=key)

    # -- writing ---------------------------------------------------------------------------

    def _append(self, db: sqlite3.Connection, rows: list[dict[str, object]]) -> None:
        head = db.execute(f"SELECT id, hash FROM {_TABLE} ORDER BY id DESC LIMIT 1").fetchone()
        last_id, prev_hash = (int(head[0]), str(head[1])) if head else (0, GENESIS)
        for fields in rows:
            digest = link(prev_hash, fields)
            cursor = db.execute(
                f"INSERT INTO {_TABLE} ({', '.join(_FIELDS)}, prev_hash, hash)"
                f" VALUES ({', '.join('?' * (len(_FIELDS) + 2))})",
                (*(fields[name] for name in _FIELDS), prev_hash, digest),
            )
            last_id, prev_hash = int(cursor.lastrowid or 0), digest
        store_head(db, self.key, _TABLE, last_id, prev_hash)

    def _row(
        self, job: str, run_id: str, server_round: int, kind: str, token: str,
        entry: AccountingEntry, delta: float, epsilon_job: float | None, total: float,
        unit: str,
    ) -> dict[str, object]:  # fmt: skip
        noise, rate, steps = entry
        values = (
            time.time(), self.data_id, self.site, job, run_id, int(server_round), kind, token,
            float(noise), float(rate), int(steps), float(delta), epsilon_job, float(total), unit,
        )  # fmt: skip
        return dict(zip(_FIELDS, values, strict=True))

    def reserve(
        self,
        job: str,
        run_id: str,
        server_round: int,
        planned: Iterable[AccountingEntry],
        delta: float,
        max_epsilon: float,
        *,
        unit: PrivacyUnit = "image",
    ) -> Reservation:
        """Check the budget and hold the ``planned`` round against it, in one transaction.

        ``unit`` is what the job's DP-SGD protects; the settled rows repeat it.
        """
        planned = list(planned)
        token = secrets.token_hex(16)
        with self.connection() as db:
            db.execute("BEGIN IMMEDIATE")  # one writer: no other round checks until we commit
            self._require_intact(db)
            projected = self._project(self._mine(db), planned, delta, max_epsilon)
            self._append(
                db,
                [
                    self._row(job, run_id, server_round, _RESERVED, token, entry, delta, None,
                              projected, unit)
                    for entry in planned
                ],
            )  # fmt: skip
        return Reservation(token, projected)

    def settle(
        self, reservation: Reservation, entries: Iterable[AccountingEntry], epsilon_job: float
    ) -> float:
        """Replace a reservation by what the round actually ran; returns the new total."""
        entries = list(entries)
        with self.connection() as db:
            db.execute("BEGIN IMMEDIATE")
            self._require_intact(db)
            mine = self._mine(db)
            held = [row for row in mine if row.reservation == reservation.token]
            if not held or any(row.kind == _SPENT for row in held):
                raise LedgerTamperedError(
                    f"{self.path}: reservation {reservation.token} is unknown or settled already"
                )
            first = held[0]
            delta = float(first.delta)
            others = [_entry(r) for r in _accounted(mine) if r.reservation != reservation.token]
            total = composed_epsilon([*others, *entries], delta)
            recorded = entries or [(*_entry(first)[:2], 0)]  # a settled round with no step
            self._append(
                db,
                [
                    self._row(str(first.job), str(first.run_id), int(first.round),
                              _SPENT, reservation.token, entry, delta, epsilon_job, total,
                              first.unit or "image")
                    for entry in recorded
                ],
            )  # fmt: skip
        return total

    def record(
        self,
        job: str,
        run_id: str,
        server_round: int,
        entries: Iterable[AccountingEntry],
        delta: float,
        epsilon_job: float,
        *,
        unit: PrivacyUnit = "image",
    ) -> float:
        """Reserve and settle ``entries`` at once, whatever the budget; returns the new total."""
        entries = list(entries)
        reservation = self.reserve(job, run_id, server_round, entries, delta, math.inf, unit=unit)
        return self.settle(reservation, entries, epsilon_job)
