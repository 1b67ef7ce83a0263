"""Command-line plumbing shared by every medfed command: logging, errors, JSON, --version."""

import ast
import importlib
import importlib.util
import json
import logging
import math
import signal
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from enum import StrEnum
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Annotated, Any, ClassVar, NoReturn

import click
import typer
from rich.console import Console
from rich.logging import RichHandler
from rich.text import Text

from common.errors import MedfedError
from common.exit_codes import ExitCode

__all__ = [
    "exit_on_signal",
    "exit_on_sigterm",
    "FormatOption",
    "MaxPixelMib",
    "OutputFormat",
    "add_debug_log",
    "command_line_app",
    "configure_logging",
    "emit_json",
    "error_object",
    "fail_with_report",
    "user_errors",
]


class OutputFormat(StrEnum):
    """How a command reports: tables for a person, or one JSON object on stdout for a script."""

    TEXT = "text"
    JSON = "json"


#: The ``--format`` option of every command that reports.
FormatOption = Annotated[
    OutputFormat,
    typer.Option(
        "--format",
        help="text (tables) or json: one JSON object on stdout, logs and progress on stderr; "
        "on failure an object with an 'error' (code, kind, message; see docs/exit-codes.md).",
    ),
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


def emit_json(payload: Mapping[str, Any]) -> None:
    """Write ``payload`` as one JSON document on stdout (the only thing a JSON run writes there).

    Paths become strings and NaN or infinite numbers (an undefined metric) become null: the
    output is strict JSON that any parser reads.
    """
    typer.echo(json.dumps(_strict(payload), indent=2, allow_nan=False, default=str))


def _strict(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Mapping):
        return {str(key): _strict(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_strict(item) for item in value]
    return value


def error_object(code: ExitCode, message: str) -> dict[str, Any]:
    """The ``error`` member of a failed command's JSON: exit code, its name and the message."""
    return {"code": int(code), "kind": code.name.lower(), "message": message}


def exit_on_signal(signum: int, _frame: object) -> None:
    """A signal handler that exits like a signal death (128 + signum), unwinding ``finally``."""
    raise SystemExit(128 + signum)


@contextmanager
def exit_on_sigterm() -> Iterator[None]:
    """SIGTERM (a service manager, a scheduler, `kill`) ends the block as Ctrl-C would.

    Python's default SIGTERM kills the process at once, leaving what it started running (a
    SuperLink, the simulation runtime, Ray): as SystemExit, the ``finally`` clauses stop them.
    """
    previous = signal.signal(signal.SIGTERM, exit_on_signal)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextmanager
def user_errors(output: OutputFormat = OutputFormat.TEXT) -> Iterator[None]:
    """Turn an error into one clear red line and its exit code, without a traceback.

    A MedfedError (a user's mistake, unusable data, a refusal) exits with its class's exit
    code; any other error is a fault of medfed: one line names it, its traceback goes to the
    debug log (and to the console with --verbose), and the exit code is INTERNAL_ERROR. With
    ``output`` JSON, stdout also gets ``{"error": {"code", "kind", "message"}}``.
    """
    try:
        yield
    except MedfedError as exc:
        _fail(exc.exit_code, str(exc), output)
    except (click.exceptions.Exit, click.ClickException, click.Abort, KeyboardInterrupt):
        raise
    except Exception as exc:
        logging.getLogger(__name__).debug("unexpected error", exc_info=True)
        _fail(
            ExitCode.INTERNAL_ERROR,
            f"unexpected {type(exc).__name__}: {exc} (a medfed fault; the traceback is in the "
            "debug log, or run again with --verbose)",
            output,
        )


def fail_with_report(payload: Mapping[str, Any], code: ExitCode, message: str) -> NoReturn:
    """End a JSON run that has a report to give and failed: the report with an ``error``."""
    _error_line(message)
    emit_json({**payload, "error": error_object(code, message)})
    raise typer.Exit(int(code))


def _fail(code: ExitCode, message: str, output: OutputFormat) -> NoReturn:
    _error_line(message)
    if output is OutputFormat.JSON:
        emit_json({"error": error_object(code, message)})
    raise typer.Exit(int(code)) from None


def _error_line(text: str) -> None:
    """Print ``text`` after a red 'error:', literally (file names may hold [markup])."""
    _console.print(Text.assemble(("error:", "bold red"), " ", text), soft_wrap=True)


def _package_version() -> str:
    try:
        return version("medfed")
    except PackageNotFoundError:  # a source tree that was never installed
        return "unknown"


def _docstring_in_source(target: str) -> str | None:
    """The docstring of ``"module:function"``, read from its source file without importing it.

    None when the source or the function cannot be found (the module is then imported).
    """
    module_name, function_name = target.split(":")
    spec = importlib.util.find_spec(module_name)  # imports the parent packages only
    if spec is None or spec.origin is None or not spec.origin.endswith(".py"):
        return None
    tree = ast.parse(Path(spec.origin).read_text(encoding="utf-8"))
    for node in tree.body:
        if isinstance(node, ast.FunctionDef) and node.name == function_name:
            return ast.get_docstring(node) or ""
    return None


class _CommandsOnDemand(typer.core.TyperGroup):
    """Subcommands imported when they are called, not when the program starts.

    A command module may load torch, MONAI or Opacus (seconds of start-up); `medfed-server
    status` or `medfed-site start` should not pay for `prepare`'s imports. ``lazy`` maps a
    command name to ``"module:function"``; each subclass (one per program) sets its own.
    """

    lazy: ClassVar[Mapping[str, str]] = {}
    #: True while the program's help is written: commands are listed from their sources.
    _listing = False

    def list_commands(self, ctx: click.Context) -> list[str]:
        """The commands in the order they were declared."""
        return [*super().list_commands(ctx), *(n for n in self.lazy if n not in self.commands)]

    def format_help(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """The program's help, each command's line read from its function's docstring."""
        self._listing = True
        try:
            super().format_help(ctx, formatter)
        finally:
            self._listing = False

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        """The command ``cmd_name``, its module imported on first use (not for the help)."""
        if self._listing and cmd_name not in self.commands and cmd_name in self.lazy:
            summary = _docstring_in_source(self.lazy[cmd_name])
            if summary is not None:
                return click.Command(cmd_name, help=summary)
        if cmd_name not in self.commands and cmd_name in self.lazy:
            module_name, function_name = self.lazy[cmd_name].split(":")
            function = getattr(importlib.import_module(module_name), function_name)
            single = typer.Typer()
            single.command(cmd_name)(function)
            self.add_command(typer.main.get_command(single), cmd_name)
        return super().get_command(ctx, cmd_name)


def command_line_app(
    name: str, help_text: str, commands: Mapping[str, str] | None = None
) -> typer.Typer:
    """A Typer app as every medfed command line has it.

    Help when called bare, ``-h`` as well as ``--help``, ``--version``, plain tracebacks.
    ``commands`` maps each subcommand's name to ``"module:function"``, imported only when that
    subcommand runs (the program's help reads the function's docstring from its source).
    """
    group = type(f"{name}-commands", (_CommandsOnDemand,), {"lazy": dict(commands or {})})
    app = typer.Typer(
        name=name,
        help=help_text,
        cls=group,
        no_args_is_help=True,
        pretty_exceptions_enable=False,
        context_settings={"help_option_names": ["-h", "--help"]},
    )

    def show_version(value: bool) -> None:
        if value:
            typer.echo(f"{name} {_package_version()}")
            raise typer.Exit()

    @app.callback()
    def main(
        _version: Annotated[
            bool,
            typer.Option(
                "--version", callback=show_version, is_eager=True, help="Print the version."
            ),
        ] = False,
    ) -> None:
        pass

    main.__doc__ = help_text
    return app
