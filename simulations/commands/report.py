"""`medfed-sim report RUN_DIR`: a static HTML page of a run, with its charts."""

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from common.cli_support import configure_logging, user_errors
from common.errors import ConfigError
from server.run_report import write_report

__all__ = ["report"]


def report(
    run_dir: Annotated[Path, typer.Argument(help="A run folder (medfed-sim run --out DIR).")],
) -> None:
    """Write RUN_DIR/report.html: rounds, per-site metrics and privacy as charts."""
    configure_logging(False)
    with user_errors():
        if not (run_dir / "metrics.json").is_file():
            raise ConfigError(str(run_dir), "no metrics.json: not a medfed run folder")
        path = write_report(run_dir)
    Console().print(f"report: {path}")
