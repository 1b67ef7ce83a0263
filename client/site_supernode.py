"""The site's SuperNode: Flower's own, polling every 0.5 s when idle instead of every 3 s.

``medfed-site start`` runs ``python -m client.site_supernode`` with flower-supernode's options.
Its SuperExec is client/site_superexec.py, which forks each message's ClientApp process from a
warm parent instead of starting it cold.
"""

import sys

from flwr.supernode.cli import flower_supernode

from client.flower_internals import redirect_superexec_launch, shorten_supernode_waits

__all__ = ["IDLE_PULL_S", "REPLY_CHECK_S", "SUPEREXEC_LAUNCH", "main"]

#: A site with no message asks the coordinator again after this many seconds (2 requests a
#: second through the Fleet gateway, whose per-site limit is 50). Every SecAgg+ stage waits for
#: the slowest site's next ask: 1 s gave a SecAgg+ / plain round ratio of 1.55-1.96, 0.5 s
#: 1.38-1.63 (docs/results.md).
IDLE_PULL_S = 0.5
#: The SuperNode checks this often whether the ClientApp has answered a message.
REPLY_CHECK_S = 0.1
#: The SuperExec the SuperNode starts, given flower-superexec's arguments.
SUPEREXEC_LAUNCH = (sys.executable, "-m", "client.site_superexec")


def main() -> None:
    """Run flower-supernode with the shortened waits."""
    shorten_supernode_waits(IDLE_PULL_S, REPLY_CHECK_S)
    redirect_superexec_launch(SUPEREXEC_LAUNCH)
    sys.argv[0] = "flower-supernode"
    flower_supernode()


if __name__ == "__main__":
    main()
