"""The site's SuperExec: Flower's own, its ClientApp processes forked from a warm parent.

The site's SuperNode (client/site_supernode.py) starts ``python -m client.site_superexec``
with the arguments it would give ``flower-superexec``; client/warm_clientapps.py says why.
"""

import logging
import sys

from client.flower_internals import (
    redirect_clientapp_launches,
    run_superexec,
    shorten_message_pull_backoff,
)
from client.warm_clientapps import WarmParent, cold_launch

__all__ = ["PULL_BACKOFF_S", "main"]

#: A warm ClientApp process asks for its message before the SuperNode has all of it: it asks
#: again after 0.1 s, then 0.2, 0.4 ... (Flower's own first wait is 1 s).
PULL_BACKOFF_S = 0.1

logger = logging.getLogger(__name__)


def main() -> None:
    """Fork the warm parent first (before Flower opens a connection), then run the SuperExec."""
    shorten_message_pull_backoff(PULL_BACKOFF_S)  # inherited by every fork
    parent = WarmParent()

    def launch(args: list[str], quiet: bool) -> None:
        if not parent.launch(args, quiet):
            logger.warning("the warm ClientApp parent is gone: starting %s cold", args[0])
            cold_launch(args, quiet)

    redirect_clientapp_launches(launch)
    sys.argv[0] = "flower-superexec"
    run_superexec()


if __name__ == "__main__":
    main()
