"""Run folders: each job writes into a folder of its own, never into an earlier run's."""

import time
from pathlib import Path

from common.errors import ConfigError

__all__ = ["claim_run_folder", "new_run_folder"]


def new_run_folder(runs: Path, job_name: str) -> Path:
    """Create and return ``runs/<YYYYmmdd-HHMMSS>-<job>``, suffixed ``-2``, ``-3``, ... when taken.

    The folder is reserved by ``mkdir`` itself (atomic), so two jobs submitted in the same
    second, even by two processes, never share a run folder and never overwrite a model.
    """
    runs.mkdir(parents=True, exist_ok=True)
    base = f"{time.strftime('%Y%m%d-%H%M%S')}-{job_name}"
    for attempt in range(1, 1000):
        run_dir = runs / (base if attempt == 1 else f"{base}-{attempt}")
        try:
            run_dir.mkdir()
        except FileExistsError:
            continue
        return run_dir
    raise ConfigError(str(runs), f"1000 run folders named {base}: clean up the runs folder")


def claim_run_folder(option: str, folder: Path) -> Path:
    """Create ``folder`` (named by the user with ``option``), refusing one that holds files.

    An earlier run's model, metrics and ledgers are never overwritten: a run is continued
    with ``--resume``, not by naming its folder again.
    """
    if folder.is_dir() and any(folder.iterdir()):
        raise ConfigError(
            option, f"{folder} already holds files: give a new folder, or --resume an earlier run"
        )
    folder.mkdir(parents=True, exist_ok=True)
    return folder
