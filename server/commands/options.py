"""Options and checks shared by the medfed-server commands."""

from pathlib import Path
from typing import Annotated

import typer

from common.errors import CoordinatorNotRunningError
from server.coordinator import CoordinatorPaths

__all__ = ["DEFAULT_STATE", "StateOption", "VerboseOption", "running_coordinator"]

StateOption = Annotated[Path, typer.Option(help="The coordinator's state folder.")]
VerboseOption = Annotated[bool, typer.Option(help="Debug logging.")]
DEFAULT_STATE = Path("coordinator-state")


def running_coordinator(state: Path) -> CoordinatorPaths:
    """The state of the coordinator running with ``state``; an error when none is."""
    paths = CoordinatorPaths(state)
    if not paths.info.is_file():
        raise CoordinatorNotRunningError(
            f"no coordinator running with state {state}: medfed-server start"
        )
    return paths
