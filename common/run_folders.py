"""Run folders: each job writes into a folder of its own, never into an earlier run's."""

import time
from pathlib import Path

from common.cli_values import check_output_folder
from common.errors import ConfigError

__all__ = ["claim_run_folder", "new_run_folder"]


def new_run_folder(runs: Path, job_name: str) -> Path:
    """Create and return ``runs/<YYYYmmdd-HHMMSS>-<job>``, suffixed ``-2``, ``-3``, ... when taken.

    The folder is reserved by ``mkdir`` itself (atomic), so two jobs submitted in the same
    second, even by two processes, never share a run folder and never overwrite a model.
    """
    _make_folder("runs folder", runs)
    base = f"{time.strftime('%Y%m%d-%H%M%S')}-{job_name}"
    for attempt in range(1, 1000):
        run_dir = runs / (base if attempt == 1 else f"{base}-{attempt}")
        try:
            run_dir.mkdir()
        except FileExistsError:
            continue
        except OSError as error:
            raise ConfigError(str(run_dir), f"cannot create it: {error.strerror}") from error
        return run_dir
    raise ConfigError(str(runs), f"1000 run folders named {base}: clean up the runs folder")


def claim_run_folder(option: str, folder: Path) -> Path:
    """Create ``folder`` (named by the user with ``option``), refusing one that holds files.

    An earlier run's model, metrics and ledgers are never overwritten: a run is continued
    with ``--resume``, not by naming its folder again.
    """
    check_output_folder(option, folder)
    if folder.is_dir() and any(folder.iterdir()):
        raise ConfigError(
            option, f"{folder} already holds files: give a new folder, or --resume an earlier run"
        )
    _make_folder(option, folder)
    return folder


def _make_folder(source: str, folder: Path) -> None:
    """``mkdir -p``; what the system refuses (read-only, full disk) is a ConfigError."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise ConfigError(source, f"cannot create {folder}: {error.strerror}") from error
