"""Work a ClientApp process does after its reply has left: run by a site's warm ClientApp child.

Flower's ``flwr-clientapp`` pushes a message's reply and its context, then exits through
``flwr_exit``, which ends the process by force 5 s later (``FORCE_EXIT_TIMEOUT_SECONDS``).
A forked ClientApp (client/warm_clientapps.py) therefore runs what the message deferred here
in a child of its own, which has none of Flower's threads: the replying process waits only
until the work announces it is under way (:func:`announce_started`), then exits. Anywhere
else (Flower's Simulation Engine, a cold ``flwr-clientapp``) nothing may be deferred and
:func:`defer` says so, so that the caller does the work at once.
"""

import contextlib
import logging
import os
import signal
from collections.abc import Callable

__all__ = ["accept_deferred_work", "announce_started", "defer", "run_deferred_work"]

logger = logging.getLogger(__name__)

_accepting = False
_pending: list[Callable[[], None]] = []
#: In the child running deferred work: the pipe its parent waits on until the work started.
_started_pipe: int | None = None


def accept_deferred_work() -> None:
    """Declare that this process runs :func:`run_deferred_work` once its reply has left."""
    global _accepting  # noqa: PLW0603 (one flag per process)
    _accepting = True


def defer(work: Callable[[], None]) -> bool:
    """Run ``work`` after this process's reply has left; False (nothing kept) if it cannot.

    ``work`` runs in another process: it calls :func:`announce_started` once it has said
    where it runs (its process id), and the replying process may exit from then on.
    """
    if not _accepting:
        return False
    _pending.append(work)
    return True


def announce_started() -> None:
    """Let the replying process exit: the deferred work is under way (a no-op elsewhere)."""
    global _started_pipe  # noqa: PLW0603
    if _started_pipe is not None:
        os.close(_started_pipe)
        _started_pipe = None


def _run_in_child(work: list[Callable[[], None]], started_pipe: int) -> None:
    global _started_pipe  # noqa: PLW0603
    _started_pipe = started_pipe
    for stop in (signal.SIGTERM, signal.SIGINT):  # not Flower's handlers, which push and exit
        signal.signal(stop, signal.SIG_DFL)
    code = 0
    try:
        for step in work:
            try:
                step()
            except Exception:
                logger.exception("work deferred after a ClientApp's reply failed")
                code = 1
    finally:
        announce_started()
        os._exit(code)


def run_deferred_work() -> None:
    """Start the deferred work in a child process; return once it is under way (or over)."""
    if not _pending:
        return
    work = list(_pending)
    _pending.clear()
    read_end, write_end = os.pipe()
    if os.fork() == 0:
        os.close(read_end)
        _run_in_child(work, write_end)
    os.close(write_end)
    with contextlib.suppress(OSError):
        os.read(read_end, 1)  # returns at the child's announce_started, or at its end
    os.close(read_end)
