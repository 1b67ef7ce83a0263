"""Reading configuration files and validating them, with errors that name the file and key."""

import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from common.errors import ConfigError

__all__ = ["read_toml", "validate_model"]

Model = TypeVar("Model", bound=BaseModel)


def read_toml(path: Path) -> dict[str, Any]:
    """The tables of a TOML file; a missing or malformed file is a ConfigError naming it."""
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(str(path), "file not found") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(str(path), f"not valid TOML: {exc}") from None


def validate_model(model: type[Model], raw: Mapping[str, Any], source: str) -> Model:
    """Validate ``raw`` into ``model``; every problem is listed as key = value: reason."""
    try:
        return model.model_validate(dict(raw))
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            where = ".".join(str(part) for part in err["loc"]) or "(top level)"
            value = err.get("input")
            shown = "" if isinstance(value, dict) else f" = {value!r}"
            problems.append(f"{where}{shown}: {err['msg']}")
        raise ConfigError(source, "; ".join(problems)) from None
