"""Exceptions that name the bad file or value, shared by every medfed package."""

from pathlib import Path

__all__ = ["ConfigError", "DataFormatError", "MedfedError", "ModelNotPrivacyCompatibleError"]


class MedfedError(Exception):
    """Base class of every error medfed reports to a user."""


class DataFormatError(MedfedError):
    """A data file or folder cannot be read; the message names the path and the reason."""

    def __init__(self, path: Path | str, reason: str) -> None:
        self.path = Path(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


class ConfigError(MedfedError):
    """A configuration value is invalid; the message names the source, the key and the value."""

    def __init__(self, source: str, reason: str) -> None:
        self.source = source
        self.reason = reason
        super().__init__(f"{source}: {reason}")


class ModelNotPrivacyCompatibleError(MedfedError):
    """The model contains layers that DP-SGD (Opacus) cannot train with per-sample gradients."""
