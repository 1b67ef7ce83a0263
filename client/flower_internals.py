"""The site's only door into Flower internals: SecAgg+ keys and mod, serde, SuperNode processes.

flwr 1.41 exposes SecAgg+ only on its legacy path; its record keys and stage names live in
``flwr.common.secure_aggregation`` and messages are serialised by ``flwr.common.serde``. Its
SuperNode waits a fixed 3 s after a pull that found no message and checks for the ClientApp's
reply every 0.5 s, neither configurable; it starts ``flower-superexec``, which starts a cold
``flwr-clientapp`` process per message, both by ``subprocess.Popen``. Every use is re-exported
or patched from here, and tests/test_flower_contract.py fails loudly when a Flower upgrade
moves or changes them.
"""

import math
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import numpy as np
from flwr.app import ArrayRecord, RecordDict
from flwr.client.mod import secaggplus_mod
from flwr.common import bytes_to_ndarray, ndarray_to_bytes, ndarrays_to_parameters
from flwr.common.secure_aggregation.secaggplus_constants import (
    RECORD_KEY_CONFIGS,
    RECORD_KEY_STATE,
    Key,
    Stage,
)
from flwr.common.serde import recorddict_to_proto
from flwr.compat.common.recorddict_compat import parameters_to_arrayrecord

from client.warm_clientapps import cold_launch

__all__ = [
    "FIT_PARAMETERS_RECORD",
    "FLOWER_CLIENTAPP_COMMAND",
    "FLOWER_IDLE_PULL_S",
    "FLOWER_PULL_BACKOFF_CAP_S",
    "FLOWER_PULL_BACKOFF_S",
    "FLOWER_SUPEREXEC_COMMAND",
    "FLOWER_REPLY_CHECK_S",
    "RECORD_KEY_CONFIGS",
    "RECORD_KEY_STATE",
    "Stage",
    "SupernodeWaits",
    "Key",
    "bytes_to_ndarray",
    "fit_arrays",
    "ndarray_to_bytes",
    "recorddict_to_proto",
    "redirect_clientapp_launches",
    "replace_fit_arrays",
    "redirect_superexec_launch",
    "run_superexec",
    "secaggplus_mod",
    "shorten_message_pull_backoff",
    "shorten_supernode_waits",
    "superexec_executor",
]

#: A SuperNode or ClientApp process asking for a message part not there yet waits this long
#: before asking again, then twice as long each time (flwr 1.41's PULL_INITIAL_BACKOFF).
FLOWER_PULL_BACKOFF_S = 1.0
#: ... but never longer than this (flwr 1.41's PULL_BACKOFF_CAP).
FLOWER_PULL_BACKOFF_CAP_S = 10.0
#: The commands flwr 1.41 starts: the SuperNode its SuperExec, the SuperExec a ClientApp.
FLOWER_SUPEREXEC_COMMAND = "flower-superexec"
FLOWER_CLIENTAPP_COMMAND = "flwr-clientapp"

#: Where flwr 1.41's legacy ClientApp puts a NumPyClient's fit arrays in its reply.
FIT_PARAMETERS_RECORD = "fitres.parameters"

#: flwr 1.41's SuperNode sleeps this long after a pull that found no message.
FLOWER_IDLE_PULL_S = 3
#: ... and this long between two checks for the ClientApp's reply to a message.
FLOWER_REPLY_CHECK_S = 0.5


def fit_arrays(content: RecordDict) -> list[np.ndarray] | None:
    """The arrays a NumPyClient's fit returned, from its reply's content (None: none there)."""
    record = content.array_records.get(FIT_PARAMETERS_RECORD)
    return None if record is None else [array.numpy() for array in record.values()]


def replace_fit_arrays(content: RecordDict, arrays: list[np.ndarray]) -> None:
    """Make a fit reply carry ``arrays`` instead, as Flower's legacy ClientApp would."""
    record: ArrayRecord = parameters_to_arrayrecord(ndarrays_to_parameters(arrays), False)
    content.array_records[FIT_PARAMETERS_RECORD] = record


@dataclass(frozen=True)
class SupernodeWaits:
    """How long the site's SuperNode waits, each at most Flower's fixed wait."""

    #: After a pull that found no message, when the site has been idle.
    idle_pull_s: float
    #: Between two checks for the ClientApp's reply to a message.
    reply_check_s: float
    #: After a pull that found no message within ``follow_up_window_s`` of handling one: a
    #: round's next message (a SecAgg+ stage, the evaluation) is due.
    follow_up_pull_s: float
    follow_up_window_s: float

    def __post_init__(self) -> None:
        pulls = (self.idle_pull_s, self.follow_up_pull_s)
        if not (
            all(0 < wait <= FLOWER_IDLE_PULL_S for wait in pulls)
            and 0 < self.reply_check_s <= FLOWER_REPLY_CHECK_S
            and self.follow_up_window_s >= 0
        ):
            raise ValueError(f"{self} must be positive and not longer than Flower's waits")


class _ShortenedWaits:
    """``time`` as the SuperNode loop sees it: its two fixed waits replaced, the rest unchanged."""

    def __init__(self, waits: SupernodeWaits, clock: Callable[[], float] = time.monotonic) -> None:
        self._waits = waits
        self._clock = clock
        self._handled_at = -math.inf  # when the node last waited on a message it handles

    def sleep(self, seconds: float) -> None:
        if seconds == FLOWER_REPLY_CHECK_S:  # a message is being handled
            self._handled_at = self._clock()
            time.sleep(self._waits.reply_check_s)
        elif seconds == FLOWER_IDLE_PULL_S:
            recent = self._clock() - self._handled_at < self._waits.follow_up_window_s
            time.sleep(self._waits.follow_up_pull_s if recent else self._waits.idle_pull_s)
        else:
            time.sleep(seconds)

    def __getattr__(self, name: str) -> object:
        return getattr(time, name)


def supernode_loop() -> ModuleType:
    """The flwr module whose loop pulls, runs and pushes a SuperNode's messages."""
    from flwr.supernode import start_client_internal  # only the site's SuperNode needs it

    return start_client_internal


def shorten_supernode_waits(
    waits: SupernodeWaits, clock: Callable[[], float] = time.monotonic
) -> None:
    """Make this process's SuperNode wait ``waits`` instead of Flower's 3 s and 0.5 s.

    Each stage of a round waits for the slowest site's next pull: SecAgg+ has four stages,
    so a site that has just answered a message asks for the next one sooner.
    """
    supernode_loop().time = _ShortenedWaits(waits, clock)  # type: ignore[attr-defined]


class _RedirectedLaunch:
    """``subprocess`` as a Flower module sees it: one command's ``Popen`` sent elsewhere."""

    def __init__(self, command: str, launch: Callable[[list[str], bool], None]) -> None:
        self._command = command
        self._launch = launch

    def Popen(self, args: Sequence[str], **kwargs: Any) -> object:  # noqa: N802 (subprocess's name)
        if args and args[0] == self._command:
            self._launch(list(args), kwargs.get("stdout") is subprocess.DEVNULL)
            return None  # Flower keeps no handle on either process
        return subprocess.Popen(args, **kwargs)  # noqa: S603

    def __getattr__(self, name: str) -> object:
        return getattr(subprocess, name)


def redirect_superexec_launch(launch: Sequence[str]) -> None:
    """Make this process's SuperNode start ``launch`` with Flower's SuperExec arguments."""

    def start(args: list[str], quiet: bool) -> None:
        cold_launch([*launch, *args[1:]], quiet)

    supernode_loop().subprocess = _RedirectedLaunch(FLOWER_SUPEREXEC_COMMAND, start)  # type: ignore[attr-defined]


def superexec_executor() -> ModuleType:
    """The flwr module whose executor starts one ClientApp process per message."""
    from flwr.supercore.superexec.executor import subprocess_executor  # noqa: PLC0415

    return subprocess_executor


def redirect_clientapp_launches(launch: Callable[[list[str], bool], None]) -> None:
    """Make this process's SuperExec call ``launch(args, quiet)`` for every ClientApp message."""
    superexec_executor().subprocess = _RedirectedLaunch(FLOWER_CLIENTAPP_COMMAND, launch)  # type: ignore[attr-defined]


def run_superexec() -> None:
    """Flower's ``flower-superexec`` entry point, with this process's arguments."""
    from flwr.supercore.cli import flower_superexec  # noqa: PLC0415

    flower_superexec()


def message_pulls() -> tuple[Callable[..., Any], ...]:
    """The flwr functions that pull a message's parts, part by part.

    The SuperNode pulls from the coordinator with the first (``pull_objects``), a ClientApp
    process from its SuperNode with the second.
    """
    from flwr.supercore.inflatable import inflatable_utils  # noqa: PLC0415

    return inflatable_utils.pull_objects, inflatable_utils.pull_and_inflate_object_from_tree


def shorten_message_pull_backoff(initial_s: float, cap_s: float) -> None:
    """Make this process's (and its forks') message pulls retry sooner than Flower's.

    A message becomes visible before all of its parts have arrived: the SuperNode sees it while
    the coordinator is still uploading it, and a warm ClientApp process asks for it while the
    SuperNode is still downloading it. A missing part is asked for again after ``initial_s``
    (Flower: 1 s), then after twice as long each time up to ``cap_s`` (Flower: 10 s).
    """
    longest = (FLOWER_PULL_BACKOFF_S, FLOWER_PULL_BACKOFF_CAP_S)
    if not (0 < initial_s <= min(cap_s, longest[0]) and cap_s <= longest[1]):
        raise ValueError(
            f"backoff {initial_s} s (cap {cap_s} s) must be positive, not longer than Flower's"
        )
    for pull in message_pulls():
        defaults = pull.__kwdefaults__
        if defaults is None or not {"initial_backoff", "backoff_cap"} <= defaults.keys():
            raise RuntimeError(f"flwr's {pull.__name__} has no backoff: see test_flower_contract")
        defaults["initial_backoff"] = initial_s
        defaults["backoff_cap"] = cap_s
