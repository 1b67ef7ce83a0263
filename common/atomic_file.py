"""Files written whole or not at all: written under a temporary name beside, then renamed."""

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["replaced_atomically"]


@contextmanager
def replaced_atomically(path: Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path`` to write; when the block ends, rename it to ``path``.

    A reader, or a crash, sees the old file or the new one, whole. Each process and thread
    writes its own temporary file (the last rename wins). When the block raises, the temporary
    file is removed and ``path`` is left as it was. The temporary name keeps ``path``'s
    extension, so writers that add one (``np.savez``) write where they are told.
    """
    partial = path.with_name(
        f".{path.name}.{os.getpid()}-{threading.get_ident()}.partial{path.suffix}"
    )
    try:
        yield partial
        partial.replace(path)
    finally:
        partial.unlink(missing_ok=True)
