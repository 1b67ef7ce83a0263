"""Pseudonymous keys for DICOM UIDs: a keyed hash whose key never leaves the site."""

import hashlib
import hmac
import os
import secrets
from pathlib import Path

__all__ = ["SitePseudonymiser"]


class SitePseudonymiser:
    """HMAC-SHA256 of a UID under a secret site key: stable at the site, meaningless outside it.

    Without the key a pseudonym cannot be linked back to a UID, even by hashing candidate UIDs.
    """

    def __init__(self, key: bytes) -> None:
        self._key = key

    @classmethod
    def from_key_file(cls, path: Path) -> "SitePseudonymiser":
        """Load the site key, creating it (mode 0600) on first use."""
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(descriptor, "wb") as handle:
                handle.write(secrets.token_bytes(32))
        return cls(path.read_bytes())

    def __call__(self, uid: str) -> str:
        """16-hex-digit pseudonym of ``uid``."""
        return hmac.new(self._key, uid.encode(), hashlib.sha256).hexdigest()[:16]
