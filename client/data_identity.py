"""The identity of the data a site protects: the key of its privacy ledger.

A random 128-bit id created on first use in the site's state folder (``data-identity``). The
budget follows the patients' data, not the site's name (renamed on key rotation) nor the
cache (rebuilt whenever preprocessing changes, which would reset the budget if the id were
derived from its manifest); the state folder is the one thing the hospital keeps with that
data for as long as it takes part.
"""

import os
import re
import secrets
from pathlib import Path

from common.errors import DataFormatError

__all__ = ["DATA_IDENTITY_FILE", "data_identity"]

DATA_IDENTITY_FILE = "data-identity"
_FORMAT = re.compile(r"[0-9a-f]{32}")


def data_identity(state_dir: Path) -> str:
    """The id in ``state_dir/data-identity``, created there if absent."""
    path = state_dir / DATA_IDENTITY_FILE
    state_dir.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        # Written whole under a temporary name, then linked: a concurrent reader never sees
        # a half-written id, and of two concurrent creators the first link wins.
        draft = state_dir / f".{DATA_IDENTITY_FILE}.{os.getpid()}.{secrets.token_hex(4)}"
        draft.write_text(secrets.token_hex(16) + "\n", encoding="ascii")
        try:
            os.link(draft, path)
        except FileExistsError:
            pass
        finally:
            draft.unlink()
    try:
        identity = path.read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise DataFormatError(path, f"cannot read the site's data identity ({exc})") from None
    if not _FORMAT.fullmatch(identity):
        raise DataFormatError(path, "not a data identity (32 lower-case hex digits)")
    return identity
