"""An SQLite file with a schema, opened per use: the site's ledger and audit trail build on it.

Each ``with store.connection()`` is one transaction (committed on success, rolled back on
error), so a crash never leaves half a record; a fresh connection per use lets Flower's
per-message ClientApp processes share the file safely.
"""

import sqlite3
from collections.abc import Iterator
from contextlib import closing, contextmanager
from pathlib import Path

from common.errors import DataFormatError

__all__ = ["SqliteStore", "append_only"]


def append_only(table: str, what: str) -> str:
    """DDL of triggers that refuse UPDATE and DELETE on ``table`` (``what`` names it in errors)."""
    return "".join(
        f"CREATE TRIGGER IF NOT EXISTS {table}_no_{verb.lower()} BEFORE {verb} ON {table}\n"
        f"BEGIN SELECT RAISE(ABORT, '{what} is append-only'); END;\n"
        for verb in ("UPDATE", "DELETE")
    )


class SqliteStore:
    """Creates ``path`` with ``schema`` (idempotent DDL) and hands out transactions."""

    def __init__(self, path: Path, schema: str) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            with self.connection() as db:
                db.executescript(schema)
        except sqlite3.DatabaseError as exc:  # "file is not a database" and its kin
            raise DataFormatError(path, f"not a readable SQLite database ({exc})") from None

    @contextmanager
    def connection(self) -> Iterator[sqlite3.Connection]:
        """One transaction on the file."""
        with closing(sqlite3.connect(self.path, timeout=30.0)) as db, db:
            yield db
