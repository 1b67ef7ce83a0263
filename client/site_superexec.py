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
from client.site_supernode import PULL_BACKOFF_CAP_S, PULL_BACKOFF_S
from client.warm_clientapps import WarmParent, cold_launch

__all__ = ["main"]

logger = logging.getLogger(__name__)


def main() -> None:
    """Fork the warm parent first (before Flower opens a connection), then run the SuperExec."""
    shorten_message_pull_backoff(PULL_BACKOFF_S, PULL_BACKOFF_CAP_S)  # inherited by every fork
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
