"""The site's SuperNode: Flower's own, with shorter waits between its requests.

``medfed-site start`` runs ``python -m client.site_supernode`` with flower-supernode's options.
Its SuperExec is client/site_superexec.py, which forks each message's ClientApp process from a
warm parent instead of starting it cold.
"""

import sys

from flwr.supernode.cli import flower_supernode

from client.flower_internals import (
    SupernodeWaits,
    redirect_superexec_launch,
    shorten_message_pull_backoff,
    shorten_supernode_waits,
)

__all__ = ["PULL_BACKOFF_CAP_S", "PULL_BACKOFF_S", "SUPEREXEC_LAUNCH", "WAITS", "main"]

#: An idle site asks the coordinator for work every second (1 request a second through the
#: Fleet gateway, whose per-site limit is 50); for 10 s after handling a message, when a
#: round's next message is due, every 0.3 s. It checks for its ClientApp's reply every 0.1 s.
#: Every stage of a round waits for the slowest site's next ask (SecAgg+ has four), but each
#: ask costs the coordinator's SuperLink 10-20 ms of CPU: asking every 0.1 s made rounds no
#: shorter at 3 sites and longer at 10 (docs/results.md, "The global model in one packed vector").
WAITS = SupernodeWaits(
    idle_pull_s=1.0, reply_check_s=0.1, follow_up_pull_s=0.3, follow_up_window_s=10.0
)
#: A message is visible before all its parts have arrived (the coordinator is still uploading
#: it, or the SuperNode still downloading it for a warm ClientApp process): the SuperNode and
#: the ClientApp ask for a missing part again after 0.1 s, then every 0.2 s; Flower waits 1 s,
#: 2 s, 4 s ... up to 10 s. Flower pulls at most 2 parts at once: 10 requests a second at most.
PULL_BACKOFF_S = 0.1
PULL_BACKOFF_CAP_S = 0.2
#: The SuperExec the SuperNode starts, given flower-superexec's arguments.
SUPEREXEC_LAUNCH = (sys.executable, "-m", "client.site_superexec")


def main() -> None:
    """Run flower-supernode with the shortened waits."""
    shorten_supernode_waits(WAITS)
    shorten_message_pull_backoff(PULL_BACKOFF_S, PULL_BACKOFF_CAP_S)
    redirect_superexec_launch(SUPEREXEC_LAUNCH)
    sys.argv[0] = "flower-supernode"
    flower_supernode()


if __name__ == "__main__":
    main()
