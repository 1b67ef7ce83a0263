"""Tamper evidence for an append-only SQLite table: a SHA-256 chain and an HMAC on its head.

Each row stores the hash of the previous row and its own hash over both; editing or removing
a row breaks the chain from there on. The chain's head (last id and hash) is authenticated
with HMAC-SHA256 under a key kept outside the state folder, so whoever can edit the file
but not read the key can neither cut rows off the end (even lowering ``sqlite_sequence``) nor
recompute the chain. Rolling the whole file back to an older copy is not detected here.
"""

import hashlib
import hmac
import json
import sqlite3
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

__all__ = [
    "GENESIS",
    "HEAD_SCHEMA",
    "ChainReport",
    "link",
    "store_head",
    "verify_chain",
]

#: The "previous hash" of a chain's first row.
GENESIS = "0" * 64

#: One authenticated head per chained table, kept in the same file as the table.
HEAD_SCHEMA = """
CREATE TABLE IF NOT EXISTS chain_head (
    chain TEXT PRIMARY KEY,
    last_id INTEGER NOT NULL,
    hash TEXT NOT NULL,
    mac TEXT NOT NULL
);
"""


@dataclass(frozen=True)
class ChainReport:
    """Result of checking a chain: intact, or where it first breaks."""

    entries: int
    intact: bool
    problem: str = ""
    #: Whether the head was checked against its HMAC (a key was given).
    authenticated: bool = False


def link(prev_hash: str, fields: Mapping[str, object]) -> str:
    """A row's chain hash: SHA-256 over the previous hash and every field (canonical JSON)."""
    canonical = json.dumps(dict(fields), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(f"{prev_hash}\n{canonical}".encode()).hexdigest()


def _mac(key: bytes, chain: str, last_id: int, digest: str) -> str:
    return hmac.new(key, f"{chain}\n{last_id}\n{digest}".encode(), hashlib.sha256).hexdigest()


def store_head(
    db: sqlite3.Connection, key: bytes | None, chain: str, last_id: int, digest: str
) -> None:
    """Authenticate ``chain``'s new head (inside the appending transaction); no key, no head."""
    if key is not None:
        db.execute(
            "INSERT OR REPLACE INTO chain_head (chain, last_id, hash, mac) VALUES (?, ?, ?, ?)",
            (chain, last_id, digest, _mac(key, chain, last_id, digest)),
        )


def verify_chain(
    db: sqlite3.Connection,
    chain: str,
    rows: Iterable[tuple[int, Mapping[str, object], str, str]],
    key: bytes | None,
) -> ChainReport:
    """Recompute ``rows`` (id, fields, previous hash, hash) of table ``chain``; check its head."""
    count, expected_prev, expected_id = 0, GENESIS, 1
    for row_id, fields, prev_hash, digest in rows:
        count += 1
        if row_id != expected_id:
            return ChainReport(count, False, f"entries {expected_id}..{row_id - 1} missing")
        if prev_hash != expected_prev:
            return ChainReport(count, False, f"entry {row_id}: previous hash differs")
        if link(prev_hash, fields) != digest:
            return ChainReport(count, False, f"entry {row_id}: content was modified")
        expected_prev, expected_id = digest, expected_id + 1
    last_id = expected_id - 1
    issued = db.execute("SELECT seq FROM sqlite_sequence WHERE name = ?", (chain,)).fetchone()
    if issued is not None and int(issued[0]) != last_id:
        return ChainReport(count, False, f"entries {expected_id}..{issued[0]} cut off the end")
    if key is None:
        return ChainReport(count, True)
    head = db.execute("SELECT last_id, hash, mac FROM chain_head WHERE chain = ?", (chain,))
    found = head.fetchone()
    if found is None:
        if count == 0:
            return ChainReport(count, True, authenticated=True)
        return ChainReport(count, False, "no authenticated chain head: written without the key")
    stored_id, stored_hash, stored_mac = found
    if not hmac.compare_digest(_mac(key, chain, int(stored_id), str(stored_hash)), str(stored_mac)):
        return ChainReport(
            count, False, "chain head fails its HMAC: rewritten, or not this site's key"
        )
    if (int(stored_id), str(stored_hash)) != (last_id, expected_prev):
        return ChainReport(
            count,
            False,
            f"authenticated head is entry {stored_id}, the file ends at entry {last_id}: "
            "entries were removed or the chain recomputed",
        )
    return ChainReport(count, True, authenticated=True)
