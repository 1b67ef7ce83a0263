"""The site's integrity key: authenticates its records' chain heads, kept in the site kit.

The key is created by the site on its first start (never by the coordinator, who writes the
rest of the kit), 32 random bytes as hex in ``integrity.key`` beside ``site.key``, mode 0600.
It lives outside the state folder on purpose: whoever can edit the records must not also
hold the key. When a site gets a new kit (key rotation), copy ``integrity.key`` into it.
"""

import os
import secrets
import stat
from pathlib import Path

from common.errors import ConfigError

__all__ = ["INTEGRITY_KEY_FILE", "ensure_integrity_key", "read_integrity_key"]

INTEGRITY_KEY_FILE = "integrity.key"
_KEY_BYTES = 32


def ensure_integrity_key(kit: Path) -> Path:
    """``kit/integrity.key``, created (mode 0600) with a fresh random key if absent."""
    path = kit / INTEGRITY_KEY_FILE
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path
    with os.fdopen(fd, "w", encoding="ascii") as handle:
        handle.write(secrets.token_hex(_KEY_BYTES) + "\n")
    return path


def read_integrity_key(path: Path) -> bytes:
    """The key in ``path``; a ConfigError naming the file if it is missing, open or malformed."""
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
        text = path.read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(str(path), f"cannot read the site's integrity key ({exc})") from None
    if mode & 0o077:
        raise ConfigError(str(path), f"mode {mode:o}: the integrity key must be 0600")
    try:
        key = bytes.fromhex(text)
    except ValueError:
        key = b""
    if len(key) != _KEY_BYTES:
        raise ConfigError(str(path), f"not an integrity key ({_KEY_BYTES} bytes as hex)")
    return key
