"""The site's audit trail: every job received and every message sent, hash-chained, in SQLite.

Each entry stores the SHA-256 of the previous entry's hash and its own fields, so editing or
removing an entry breaks the chain from there on. SQLite triggers refuse UPDATE and DELETE;
with the site's integrity key the chain's head is authenticated as well, so cutting entries
off the end (even with ``sqlite_sequence`` lowered) or recomputing the chain shows
(:mod:`client.hash_chain`). Nothing here is patient data: sizes, digests, the job's config,
the epsilon the site reported, and why a message was refused.
"""

import sqlite3
from dataclasses import asdict, dataclass
from pathlib import Path

from client.hash_chain import GENESIS, HEAD_SCHEMA, ChainReport, link, store_head, verify_chain
from client.sqlite_store import SqliteStore, append_only

__all__ = ["AUDIT_TABLE", "AuditEntry", "AuditLog", "ChainReport"]

AUDIT_TABLE = "audit"

_SCHEMA = (
    """
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
"""
    + append_only(AUDIT_TABLE, "the audit log")
    + HEAD_SCHEMA
)


@dataclass(frozen=True)
class AuditEntry:
    """One logged event: an inbound job or an outbound message (a reply, error or refusal)."""

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
        return link(prev_hash, asdict(self))


class AuditLog(SqliteStore):
    """Append-only, hash-chained audit trail of one site in ``path`` (SQLite).

    With ``key`` (the site's integrity key) each append authenticates the chain's head and
    :meth:`verify` checks it.
    """

    def __init__(self, path: Path, key: bytes | None = None) -> None:
        super().__init__(path, _SCHEMA)
        self.key = key

    def append(self, entry: AuditEntry) -> str:
        """Add ``entry`` after the current head, atomically; returns its hash."""
        with self.connection() as db:
            db.execute("BEGIN IMMEDIATE")  # one writer at a time extends the chain
            head = db.execute("SELECT hash FROM audit ORDER BY id DESC LIMIT 1").fetchone()
            prev_hash = head[0] if head else GENESIS
            digest = entry.digest(prev_hash)
            cursor = db.execute(
                "INSERT INTO audit (recorded_at, direction, run_id, job, round, kind, bytes,"
                " sha256, epsilon, detail, prev_hash, hash)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (*asdict(entry).values(), prev_hash, digest),
            )
            store_head(db, self.key, AUDIT_TABLE, int(cursor.lastrowid or 0), digest)
        return digest

    def entries(self) -> list[tuple[int, AuditEntry, str, str]]:
        """(id, entry, previous hash, hash) of every entry, oldest first."""
        with self.connection() as db:
            return self._entries(db)

    @staticmethod
    def _entries(db: sqlite3.Connection) -> list[tuple[int, AuditEntry, str, str]]:
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
        """Recompute the chain (and its authenticated head, with the key)."""
        with self.connection() as db:
            rows = [(i, asdict(e), prev, h) for i, e, prev, h in self._entries(db)]
            return verify_chain(db, AUDIT_TABLE, rows, self.key)
