"""Exceptions that name the bad file or value, shared by every medfed package.

Each class carries the exit code (common/exit_codes.py) a command ends with when it is raised.
"""

from pathlib import Path
from typing import ClassVar

from common.exit_codes import ExitCode

__all__ = [
    "BUDGET_REFUSAL",
    "BudgetRefusedError",
    "ConfigError",
    "CoordinatorNotRunningError",
    "DataFormatError",
    "JobIncompleteError",
    "MedfedError",
    "ModelNotPrivacyCompatibleError",
    "RecordsBrokenError",
    "is_budget_refusal",
]

#: Ends every refusal on privacy-budget grounds: a coordinator sees only a refused reply's
#: text, and tells a budget refusal from other refusals by it.
BUDGET_REFUSAL = "refused: privacy budget"


class MedfedError(Exception):
    """Base class of every error medfed reports to a user."""

    exit_code: ClassVar[ExitCode] = ExitCode.INTERNAL_ERROR


class DataFormatError(MedfedError):
    """A data file or folder cannot be read; the message names the path and the reason."""

    exit_code = ExitCode.DATA_ERROR

    def __init__(self, path: Path | str, reason: str) -> None:
        self.path = Path(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


class ConfigError(MedfedError):
    """A configuration value is invalid; the message names the source, the key and the value."""

    exit_code = ExitCode.CONFIG_ERROR

    def __init__(self, source: str, reason: str) -> None:
        self.source = source
        self.reason = reason
        super().__init__(f"{source}: {reason}")


class ModelNotPrivacyCompatibleError(MedfedError):
    """The model contains layers that DP-SGD (Opacus) cannot train with per-sample gradients."""

    exit_code = ExitCode.MODEL_ERROR


class BudgetRefusedError(MedfedError):
    """A site refuses to train: the job or round would pass its privacy budget."""

    exit_code = ExitCode.BUDGET_REFUSED


class RecordsBrokenError(MedfedError):
    """A site's privacy ledger or audit log fails verification (chain, head or agreement)."""

    exit_code = ExitCode.RECORDS_BROKEN


class JobIncompleteError(MedfedError):
    """A training job stopped before its last round; its run folder can be resumed."""

    exit_code = ExitCode.JOB_INCOMPLETE


class CoordinatorNotRunningError(MedfedError):
    """No coordinator runs with the given state folder."""

    exit_code = ExitCode.NOT_RUNNING


def is_budget_refusal(reason: str) -> bool:
    """Whether a site's refusal text (as the coordinator records it) is a budget refusal."""
    return BUDGET_REFUSAL in reason
