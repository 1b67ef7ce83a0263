"""List the regular files under a site's data folder; report everything else with its reason.

Only regular files are ever opened: a FIFO, socket or device among the exports would block or
stream forever, so it is listed as skipped and never opened. A folder that cannot be listed
and a symbolic link to a folder (not followed: it could loop or leave the data folder) are
reported too, so nothing under the data folder disappears silently.
"""

import os
import stat
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["SiteFiles", "list_site_files", "os_error_reason"]

_KINDS = (
    (stat.S_ISFIFO, "a FIFO (named pipe)"),
    (stat.S_ISSOCK, "a socket"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
)


@dataclass
class SiteFiles:
    """Regular files (absolute paths, sorted, with their sizes) and what was not listed."""

    files: list[tuple[Path, int]] = field(default_factory=list)
    #: (path relative to the root, reason) of every entry that is not a readable regular file.
    problems: list[tuple[Path, str]] = field(default_factory=list)


def _kind(mode: int) -> str:
    return next((name for test, name in _KINDS if test(mode)), "not a regular file")


def os_error_reason(exc: OSError) -> str:
    """'permission denied', 'no such file or directory', ... (no path: the caller names it)."""
    text = exc.strerror or type(exc).__name__
    return text[0].lower() + text[1:] if text else type(exc).__name__


def _list_folder(folder: Path, root: Path, found: SiteFiles) -> None:
    try:
        with os.scandir(folder) as entries:
            items = sorted(entries, key=lambda e: e.name)
    except OSError as exc:
        where = folder.relative_to(root).as_posix() or "."
        found.problems.append((Path(where), f"folder not readable ({os_error_reason(exc)})"))
        return
    for entry in items:
        path = Path(entry.path)
        relative = path.relative_to(root)
        try:
            if entry.is_dir(follow_symlinks=False):
                _list_folder(path, root, found)
                continue
            info = entry.stat(follow_symlinks=True)
        except OSError as exc:  # a dangling or looping symbolic link, a vanished file
            found.problems.append((relative, f"file not readable ({os_error_reason(exc)})"))
            continue
        if stat.S_ISREG(info.st_mode):
            found.files.append((path, info.st_size))
        elif stat.S_ISDIR(info.st_mode):
            found.problems.append((relative, "symbolic link to a folder: not followed"))
        else:
            reason = f"not a regular file ({_kind(info.st_mode)}): never opened"
            found.problems.append((relative, reason))


def list_site_files(root: Path) -> SiteFiles:
    """Every regular file under ``root`` (any depth, symbolic links to files followed).

    Folders are listed with ``os.scandir``, whose entries know their type without a ``stat``
    call; only symbolic links and files (for their size) are stat'ed. Nothing is opened.
    """
    found = SiteFiles()
    _list_folder(Path(root), Path(root), found)
    found.files.sort()
    return found
