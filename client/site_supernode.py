"""The site's SuperNode: Flower's own, polling every second when idle instead of every 3 s.

``medfed-site start`` runs ``python -m client.site_supernode`` with flower-supernode's options.
Its SuperExec is client/site_superexec.py, which forks each message's ClientApp process from a
warm parent instead of starting it cold.
"""

import sys

from flwr.supernode.cli import flower_supernode

from client.flower_internals import (
    SupernodeWaits,
    redirect_superexec_launch,
    shorten_supernode_waits,
)

__all__ = ["SUPEREXEC_LAUNCH", "WAITS", "main"]

#: An idle site asks the coordinator for work every second (1 request a second through the
#: Fleet gateway, whose per-site limit is 50); for 10 s after handling a message, when a
#: round's next message is due, every 0.25 s. It checks for its ClientApp's reply every 0.1 s.
WAITS = SupernodeWaits(
    idle_pull_s=1.0, reply_check_s=0.1, follow_up_pull_s=0.25, follow_up_window_s=10.0
)
#: The SuperExec the SuperNode starts, given flower-superexec's arguments.
SUPEREXEC_LAUNCH = (sys.executable, "-m", "client.site_superexec")


def main() -> None:
    """Run flower-supernode with the shortened waits."""
    shorten_supernode_waits(WAITS)
    redirect_superexec_launch(SUPEREXEC_LAUNCH)
    sys.argv[0] = "flower-supernode"
    flower_supernode()


if __name__ == "__main__":
    main()
