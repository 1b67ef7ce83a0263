"""`medfed-server dashboard`: serve the federation's dashboard on the coordinator's machine."""

import logging
from pathlib import Path
from typing import Annotated

import typer
import uvicorn

from common.cli_support import configure_logging, user_errors
from server.commands.options import DEFAULT_STATE, StateOption, VerboseOption
from server.dashboard import create_dashboard

__all__ = ["dashboard"]

logger = logging.getLogger(__name__)


def dashboard(
    kits: Annotated[Path, typer.Option(help="Folder written by `medfed-server provision`.")],
    state: StateOption = DEFAULT_STATE,
    host: Annotated[str, typer.Option(help="Listen address (keep it local).")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port of the page.")] = 8050,
    refresh: Annotated[int, typer.Option(help="Seconds between page reloads.")] = 5,
    verbose: VerboseOption = False,
) -> None:
    """Sites, current job and round, metrics, privacy and traffic, updated while jobs run."""
    configure_logging(verbose)
    with user_errors():
        app = create_dashboard(state.resolve(), kits.resolve(), refresh)
    logger.info("dashboard on http://%s:%d/ (Ctrl-C stops it)", host, port)
    uvicorn.run(app, host=host, port=port, log_level="warning")
