"""Command-line plumbing shared by medfed-sim and medfed-site: logging and user-facing errors."""

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated

import typer
from rich.console import Console
from rich.logging import RichHandler

from common.errors import ConfigError, DataFormatError, MedfedError, ModelNotPrivacyCompatibleError
from common.exit_codes import ExitCode

__all__ = ["MaxPixelMib", "command_line_app", "configure_logging", "user_errors"]

#: The ``--max-pixel-mib`` option of every command that reads a site's DICOM files.
MaxPixelMib = Annotated[
    float,
    typer.Option(
        help="Refuse, before decoding, a DICOM file whose header declares more decoded pixels "
        "than this many MiB (rows x columns x frames x samples x bits)."
    ),
]

_console = Console(stderr=True)


def configure_logging(verbose: bool) -> None:
    """Medfed logs at INFO (DEBUG with --verbose); Flower, Ray, httpx warn only, unless verbose."""
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(message)s",
        datefmt="%H:%M:%S",
        handlers=[RichHandler(console=_console, show_path=False)],
        force=True,
    )
    for noisy in ("flwr", "ray", "opacus", "httpx", "httpcore"):
        logging.getLogger(noisy).setLevel(logging.INFO if verbose else logging.WARNING)


_EXIT_CODES: dict[type[MedfedError], ExitCode] = {
    ConfigError: ExitCode.CONFIG_ERROR,
    DataFormatError: ExitCode.DATA_ERROR,
    ModelNotPrivacyCompatibleError: ExitCode.MODEL_ERROR,
}


@contextmanager
def user_errors() -> Iterator[None]:
    """Turn a MedfedError into one clear red line and its exit code, without a traceback."""
    try:
        yield
    except MedfedError as exc:
        _console.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
        code = next(
            (code for kind, code in _EXIT_CODES.items() if isinstance(exc, kind)), ExitCode.FAILED
        )
        raise typer.Exit(int(code)) from None


def command_line_app(name: str, help_text: str) -> typer.Typer:
    """A Typer app as every medfed command line has it: help when called bare, plain tracebacks."""
    return typer.Typer(
        name=name, help=help_text, no_args_is_help=True, pretty_exceptions_enable=False
    )
