"""Process exit codes of every medfed command."""

from enum import IntEnum

__all__ = ["ExitCode"]


class ExitCode(IntEnum):
    """What a medfed command's exit status means."""

    OK = 0
    FAILED = 1
    CONFIG_ERROR = 2
    DATA_ERROR = 3
    MODEL_ERROR = 4
