"""Command-line options derived from the job model: one flag per described job field.

A field with a ``description`` becomes ``--NAME`` (its ``cli`` extra, else the field name with
dashes); its help is the description with the choices and the default. Values left unset keep
the job file's (or the model's default), so the options never repeat a default by hand.
"""

import inspect
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import typer
from pydantic import BaseModel

__all__ = ["JobOption", "job_options", "with_job_options"]


@dataclass(frozen=True)
class JobOption:
    """One command-line option and the dotted job key it sets."""

    flag: str
    key: str
    kind: type
    help: str


def _kind(annotation: Any) -> type | None:
    origin = typing.get_origin(annotation)
    if origin is Literal:
        return str
    if origin in (typing.Union, types.UnionType):  # X | None: an optional X
        kinds = [a for a in typing.get_args(annotation) if a is not type(None)]
        return _kind(kinds[0]) if len(kinds) == 1 else None
    if annotation is Path:
        return Path
    return annotation if annotation in (bool, int, float, str) else None


def job_options(model: type[BaseModel], prefix: str = "") -> list[JobOption]:
    """The options of ``model``'s described fields, sections included (depth first)."""
    options: list[JobOption] = []
    for name, field in model.model_fields.items():
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            options += job_options(annotation, f"{prefix}{name}.")
            continue
        kind = _kind(annotation)
        if field.description is None or kind is None:
            continue
        extra = field.json_schema_extra if isinstance(field.json_schema_extra, dict) else {}
        flag = str(extra.get("cli", name.replace("_", "-")))
        choices = typing.get_args(annotation) if typing.get_origin(annotation) is Literal else ()
        shown = f" Choices: {', '.join(map(str, choices))}." if choices else ""
        unset = field.is_required() or field.default in (None, "")
        default = "" if unset else f" (default: {field.default})"
        text = f"{field.description}{shown}{default}"
        options.append(JobOption(flag, f"{prefix}{name}", kind, text))
    return options


def _parameter(option: JobOption, panel: str) -> inspect.Parameter:
    declared = f"--{option.flag}/--no-{option.flag}" if option.kind is bool else f"--{option.flag}"
    # The type is known only at run time, so Typer reads the option from the default rather
    # than from an Annotated[...] type expression.
    return inspect.Parameter(
        option.key.replace(".", "__"),
        inspect.Parameter.KEYWORD_ONLY,
        default=typer.Option(None, declared, help=option.help, rich_help_panel=panel),
        annotation=option.kind | None,
    )


def with_job_options(
    options: list[JobOption], argument: str = "job_overrides", panel: str = "Job"
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Add ``options`` to a Typer command, which receives them as ``argument`` (dotted keys).

    The decorated function takes ``argument: Mapping[str, Any]`` holding only the options the
    user gave. Decorators stack: each adds its own options under its own help ``panel``.
    """

    def decorate(command: Callable[..., Any]) -> Callable[..., Any]:
        signature = inspect.signature(command)
        own = [p for name, p in signature.parameters.items() if name != argument]
        keys = {option.key.replace(".", "__"): option.key for option in options}

        def wrapper(**kwargs: Any) -> Any:
            overrides: Mapping[str, Any] = {
                keys[name]: kwargs.pop(name)
                for name in list(kwargs)
                if name in keys and kwargs[name] is not None
            }
            for name in keys:
                kwargs.pop(name, None)
            return command(**{argument: overrides}, **kwargs)

        # inspect.signature honours __signature__, which typeshed does not declare on functions.
        wrapper.__signature__ = signature.replace(  # type: ignore[attr-defined]
            parameters=[*own, *(_parameter(option, panel) for option in options)]
        )
        wrapper.__doc__ = command.__doc__
        wrapper.__name__ = command.__name__
        return wrapper

    return decorate
