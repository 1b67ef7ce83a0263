"""Work a ClientApp process does after its reply has left: run by a site's warm ClientApp child.

Flower's ``flwr-clientapp`` pushes a message's reply and its context, then returns. A forked
ClientApp (client/warm_clientapps.py) then runs what the message deferred here, in the same
process, before it exits. Anywhere else (Flower's Simulation Engine, a cold ``flwr-clientapp``)
nothing may be deferred and :func:`defer` says so, so that the caller does the work at once.
"""

import logging
from collections.abc import Callable

__all__ = ["accept_deferred_work", "defer", "run_deferred_work"]

logger = logging.getLogger(__name__)

_accepting = False
_pending: list[Callable[[], None]] = []


def accept_deferred_work() -> None:
    """Declare that this process runs :func:`run_deferred_work` once its reply has left."""
    global _accepting  # noqa: PLW0603 (one flag per process)
    _accepting = True


def defer(work: Callable[[], None]) -> bool:
    """Run ``work`` after this process's reply has left; False (nothing kept) if it cannot."""
    if not _accepting:
        return False
    _pending.append(work)
    return True


def run_deferred_work() -> None:
    """Run the deferred work in order; one that raises is logged and the next still runs."""
    while _pending:
        work = _pending.pop(0)
        try:
            work()
        except Exception:
            logger.exception("work deferred after a ClientApp's reply failed")
