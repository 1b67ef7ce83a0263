"""Check command-line values where they enter; each refusal is a ConfigError naming the option."""

import math
import os
from pathlib import Path

from common.errors import ConfigError

__all__ = [
    "check_fraction",
    "check_output_file",
    "check_output_folder",
    "check_positive",
]

#: Folders of kernel and device files: a report written there is never a report.
_PSEUDO_FILESYSTEMS = (Path("/proc"), Path("/sys"), Path("/dev"))


def check_positive(option: str, value: float) -> None:
    """Refuse a value that is not a finite number above zero."""
    if not math.isfinite(value) or value <= 0:
        raise ConfigError(option, f"{value} must be a finite number above 0")


def check_fraction(option: str, value: float, upper_inclusive: bool = False) -> None:
    """Refuse a share outside [0, 1) (or [0, 1] with ``upper_inclusive``), or not finite."""
    above = value > 1 if upper_inclusive else value >= 1
    if not math.isfinite(value) or value < 0 or above:
        bound = "1]" if upper_inclusive else "1)"
        raise ConfigError(option, f"{value} is not a share in [0, {bound}")


def check_output_file(option: str, path: Path) -> None:
    """Refuse an output file path that names a folder, a special file or a missing folder."""
    resolved = path.resolve()
    if any(resolved.is_relative_to(root) for root in _PSEUDO_FILESYSTEMS):
        raise ConfigError(option, f"{path} is in a kernel or device folder: give a regular file")
    if resolved.is_dir():
        raise ConfigError(option, f"{path} is a folder: give a file name")
    if resolved.exists() and not resolved.is_file():
        raise ConfigError(option, f"{path} exists and is not a regular file")
    if not resolved.parent.is_dir():
        raise ConfigError(option, f"{path}: its folder {resolved.parent} is not an existing folder")


def check_output_folder(option: str, path: Path) -> None:
    """Refuse an output folder path that could not be created or written.

    That is an existing file, a place in /proc, /sys or /dev, or a path whose nearest existing
    folder is a file or is not writable.
    """
    resolved = path.resolve()
    if any(resolved.is_relative_to(root) for root in _PSEUDO_FILESYSTEMS):
        raise ConfigError(option, f"{path} is in a kernel or device folder: give a folder")
    if resolved.exists() and not resolved.is_dir():
        raise ConfigError(option, f"{path} is a file: give a folder (it is created if missing)")
    existing = next(folder for folder in (resolved, *resolved.parents) if folder.exists())
    if not existing.is_dir():
        raise ConfigError(option, f"{path}: {existing} is a file, so no folder can be made in it")
    if not os.access(existing, os.W_OK | os.X_OK):
        what = "it is" if existing == resolved else f"{existing} is"
        raise ConfigError(option, f"{path}: {what} not writable by this user")
