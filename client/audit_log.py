"""The site's audit trail: every job received and every message sent, hash-chained, in SQLite.

Each entry stores the SHA-256 of the previous entry's hash and its own fields, so editing or
removing an entry breaks the chain from there on. SQLite triggers refuse UPDATE and DELETE,
and AUTOINCREMENT keeps the highest id ever issued (``sqlite_sequence``), so cutting entries
off the end shows as well. Nothing here is patient data: sizes, digests, the job's config,
and the epsilon the site reported.
"""

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path

from client.sqlite_store import SqliteStore, append_only

__all__ = ["AuditEntry", "AuditLog", "ChainReport"]

GENESIS = "0" * 64

_SCHEMA = """
CREATE TABLE IF NOT EXISTS audit (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    recorded_at REAL NOT NULL,
    direction TEXT NOT NULL,
    run_id TEXT NOT NULL,
    job TEXT NOT NULL,
    round INTEGER NOT NULL,
    kind TEXT NOT NULL,
    bytes INTEGER NOT NULL,
    sha256 TEXT NOT NULL,
    epsilon REAL,
    detail TEXT NOT NULL,
    prev_hash TEXT NOT NULL,
    hash TEXT NOT NULL
);
""" + append_only("audit", "the audit log")


@dataclass(frozen=True)
class AuditEntry:
    """One logged event: an inbound job or an outbound message."""

    recorded_at: float
    direction: str  # "in" (a job's config) or "out" (a reply this site sent)
    run_id: str
    job: str
    round: int
    kind: str
    bytes: int
    sha256: str
    epsilon: float | None
    detail: str

    def digest(self, prev_hash: str) -> str:
        """This entry's chain hash: SHA-256 over the previous hash and every field."""
        fields = json.dumps(asdict(self), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(f"{prev_hash}\n{fields}".encode()).hexdigest()


@dataclass(frozen=True)
class ChainReport:
    """Result of checking the chain: intact, or where it first breaks."""

    entries: int
    intact: bool
    problem: str = ""


class AuditLog(SqliteStore):
    """Append-only, hash-chained audit trail of one site in ``path`` (SQLite)."""

    def __init__(self, path: Path) -> None:
        super().__init__(path, _SCHEMA)

    def append(self, entry: AuditEntry) -> str:
        """Add ``entry`` after the current head, atomically; returns its hash."""
        with self.connection() as db:
            db.execute("BEGIN IMMEDIATE")  # one writer at a time extends the chain
            head = db.execute("SELECT hash FROM audit ORDER BY id DESC LIMIT 1").fetchone()
            prev_hash = head[0] if head else GENESIS
            digest = entry.digest(prev_hash)
            db.execute(
                "INSERT INTO audit (recorded_at, direction, run_id, job, round, kind, bytes,"
                " sha256, epsilon, detail, prev_hash, hash)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (*asdict(entry).values(), prev_hash, digest),
            )
        return digest

    def entries(self) -> list[tuple[int, AuditEntry, str, str]]:
        """(id, entry, previous hash, hash) of every entry, oldest first."""
        with self.connection() as db:
            rows = db.execute(
                "SELECT id, recorded_at, direction, run_id, job, round, kind, bytes, sha256,"
                " epsilon, detail, prev_hash, hash FROM audit ORDER BY id"
            ).fetchall()
        return [(row[0], AuditEntry(*row[1:11]), row[11], row[12]) for row in rows]

    def has_job(self, run_id: str) -> bool:
        """Whether the inbound config of run ``run_id`` is logged already."""
        with self.connection() as db:
            found = db.execute(
                "SELECT 1 FROM audit WHERE run_id = ? AND direction = 'in' LIMIT 1", (run_id,)
            ).fetchone()
        return found is not None

    def verify(self) -> ChainReport:
        """Recompute the chain; report the first entry that does not fit."""
        entries = self.entries()
        count = len(entries)
        expected_prev, expected_id = GENESIS, 1
        for entry_id, entry, prev_hash, digest in entries:
            if entry_id != expected_id:
                return ChainReport(count, False, f"entries {expected_id}..{entry_id - 1} missing")
            if prev_hash != expected_prev:
                return ChainReport(count, False, f"entry {entry_id}: previous hash differs")
            if entry.digest(prev_hash) != digest:
                return ChainReport(count, False, f"entry {entry_id}: content was modified")
            expected_prev, expected_id = digest, expected_id + 1
        with self.connection() as db:
            issued = db.execute("SELECT seq FROM sqlite_sequence WHERE name = 'audit'").fetchone()
        last = int(issued[0]) if issued else 0
        if last != expected_id - 1:
            return ChainReport(count, False, f"entries {expected_id}..{last} cut off the end")
        return ChainReport(count, True)
