"""`medfed-server enrol`: register newly provisioned sites with the running coordinator."""

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from common.cli_support import configure_logging, user_errors
from server.commands.options import (
    DEFAULT_STATE,
    StateOption,
    VerboseOption,
    running_coordinator,
)
from server.coordinator import enrol_sites

__all__ = ["enrol"]


def enrol(
    kits: Annotated[Path, typer.Option(help="Folder written by `medfed-server provision`.")],
    state: StateOption = DEFAULT_STATE,
    verbose: VerboseOption = False,
) -> None:
    """Enrol every site kit whose key the coordinator does not know yet (no restart needed)."""
    configure_logging(verbose)
    with user_errors():
        added = enrol_sites(running_coordinator(state), kits.resolve())
    Console().print(f"enrolled: {', '.join(added) or 'no new site'}")
