"""Command-line plumbing shared by medfed-sim and medfed-site: logging and user-facing errors."""

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import click
import typer
from rich.console import Console
from rich.logging import RichHandler
from rich.text import Text

from common.errors import ConfigError, DataFormatError, MedfedError, ModelNotPrivacyCompatibleError
from common.exit_codes import ExitCode

__all__ = [
    "MaxPixelMib",
    "add_debug_log",
    "command_line_app",
    "configure_logging",
    "user_errors",
]

#: The ``--max-pixel-mib`` option of every command that reads a site's DICOM files.
MaxPixelMib = Annotated[
    float,
    typer.Option(
        help="Refuse, before decoding, a DICOM file whose header declares more decoded pixels "
        "than this many MiB (rows x columns x frames x samples x bits)."
    ),
]

_console = Console(stderr=True)

#: Loggers of the libraries that read image files: their messages (a decoder's traceback for
#: each damaged file, warnings that name absolute paths) repeat what the QC report says with
#: its reason, so they go to the debug log, and to the console only with --verbose.
_FILE_READERS = ("pydicom", "openjpeg", "pylibjpeg", "PIL", "highdicom", "nibabel", "monai")
#: Python warnings, once routed to logging (treated as a file reader's).
_WARNINGS = "py.warnings"


class _QuietReaders(logging.Filter):
    """Keeps file readers' records and Python warnings off the console."""

    def filter(self, record: logging.LogRecord) -> bool:
        name = record.name
        return not (name == _WARNINGS or name.split(".")[0] in _FILE_READERS)


def configure_logging(verbose: bool) -> None:
    """Medfed logs at INFO (DEBUG with --verbose); Flower, Ray, httpx warn only, unless verbose.

    File readers' records and Python warnings reach the console only with ``verbose``; they
    go to the debug log of :func:`add_debug_log` in any case.
    """
    handler = RichHandler(console=_console, show_path=False)
    if not verbose:
        handler.addFilter(_QuietReaders())
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(message)s",
        datefmt="%H:%M:%S",
        handlers=[handler],
        force=True,
    )
    logging.captureWarnings(True)
    # pydicom logs three DEBUG lines per file it reads: kept out even of the debug log.
    logging.getLogger("pydicom").setLevel(logging.INFO if verbose else logging.WARNING)
    for noisy in ("flwr", "ray", "opacus", "httpx", "httpcore"):
        logging.getLogger(noisy).setLevel(logging.INFO if verbose else logging.WARNING)


def add_debug_log(path: Path) -> None:
    """Also write every record, DEBUG and up with tracebacks, to ``path`` (stays at the site)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(path, mode="w", encoding="utf-8", delay=True)  # on first record
    handler.setLevel(logging.DEBUG)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    if root.level > logging.DEBUG:  # the console handler keeps its own INFO threshold
        for console in root.handlers:
            if console is not handler and console.level == logging.NOTSET:
                console.setLevel(root.level)
        root.setLevel(logging.DEBUG)


_EXIT_CODES: dict[type[MedfedError], ExitCode] = {
    ConfigError: ExitCode.CONFIG_ERROR,
    DataFormatError: ExitCode.DATA_ERROR,
    ModelNotPrivacyCompatibleError: ExitCode.MODEL_ERROR,
}


@contextmanager
def user_errors() -> Iterator[None]:
    """Turn an error into one clear red line and its exit code, without a traceback.

    A MedfedError (a user's mistake or unusable data) exits with its code; any other error is
    a fault of medfed: one line names it, its traceback goes to the debug log (and to the
    console with --verbose), and the exit code is FAILED.
    """
    try:
        yield
    except MedfedError as exc:
        _error_line(str(exc))
        code = next(
            (code for kind, code in _EXIT_CODES.items() if isinstance(exc, kind)), ExitCode.FAILED
        )
        raise typer.Exit(int(code)) from None
    except (click.exceptions.Exit, click.ClickException, click.Abort, KeyboardInterrupt):
        raise
    except Exception as exc:
        logging.getLogger(__name__).debug("unexpected error", exc_info=True)
        _error_line(
            f"unexpected {type(exc).__name__}: {exc} (a medfed fault; the traceback is in the "
            "debug log, or run again with --verbose)"
        )
        raise typer.Exit(int(ExitCode.FAILED)) from None


def _error_line(text: str) -> None:
    """Print ``text`` after a red 'error:', literally (file names may hold [markup])."""
    _console.print(Text.assemble(("error:", "bold red"), " ", text), soft_wrap=True)


def command_line_app(name: str, help_text: str) -> typer.Typer:
    """A Typer app as every medfed command line has it: help when called bare, plain tracebacks."""
    return typer.Typer(
        name=name, help=help_text, no_args_is_help=True, pretty_exceptions_enable=False
    )
