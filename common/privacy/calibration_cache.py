"""Noise multipliers calibrated before, kept on disk between processes.

Opacus' search for the noise multiplier of a job takes about 2 s of CPU, and every process of a
federation that plans a round repeats it for the same settings (the simulation's preflight, each
simulated site, each message process of a deployed site). An entry is only a hint: the caller
re-checks it with the accountant before use (one epsilon evaluation instead of the search), so
a stale or tampered file can cost time, never privacy.
"""

import hashlib
import json
import logging
import math
import os
from pathlib import Path
from typing import Any

from common.atomic_file import replaced_atomically

__all__ = ["CACHE_DIR_ENV", "cache_dir", "load", "store"]

logger = logging.getLogger(__name__)

#: Environment variable naming the folder for the entries (default: the user's cache folder).
CACHE_DIR_ENV = "MEDFED_CACHE_DIR"


def cache_dir() -> Path:
    """``$MEDFED_CACHE_DIR``, else ``$XDG_CACHE_HOME/medfed`` (``~/.cache/medfed``), + the kind."""
    explicit = os.environ.get(CACHE_DIR_ENV)
    if explicit:
        root = Path(explicit)
    else:
        root = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "medfed"
    return root / "noise-multipliers"


def _entry(key: dict[str, Any]) -> Path:
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()
    return cache_dir() / f"{digest}.json"


def load(key: dict[str, Any]) -> float | None:
    """The noise multiplier stored for exactly ``key``; None if absent or unreadable."""
    try:
        raw = json.loads(_entry(key).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(raw, dict) or raw.get("key") != key:
        return None
    value = raw.get("noise_multiplier")
    if not isinstance(value, float) or not math.isfinite(value) or value <= 0:
        return None
    return value


def store(key: dict[str, Any], noise_multiplier: float) -> None:
    """Keep ``noise_multiplier`` for ``key``; a folder that cannot be written is skipped."""
    path = _entry(key)
    text = json.dumps({"key": key, "noise_multiplier": noise_multiplier}, sort_keys=True)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with replaced_atomically(path) as partial:  # a concurrent reader sees old or new, whole
            partial.write_text(text, encoding="utf-8")
    except OSError as error:
        logger.debug("noise multiplier not cached in %s: %s", path.parent, error)
