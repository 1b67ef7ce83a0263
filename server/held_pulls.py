"""A site's ask for work held at the coordinator's SuperLink until a message for it arrives.

A site's SuperNode asks for its next message every 0.3 s after a reply (every 1 s when idle,
client/site_supernode.py), and each stage of a round waits for the slowest site's next ask:
SecAgg+ has four. Here an ask that finds nothing is held for up to :data:`HOLD_S` and
answered as soon as the coordinator stores a message for that node, so that a stage starts
when its message is there rather than at the site's next ask. Held asks also mean fewer asks.

At most :data:`MAX_HELD` asks are held at once: Flower's REST Fleet API runs its endpoints on
anyio's 40 worker threads, which every other Fleet call needs too; beyond that, an ask is
answered at once, as Flower does.
"""

import threading
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from flwr.app import Message
    from flwr.proto.fleet_pb2 import PullMessagesRequest, PullMessagesResponse
    from flwr.server.superlink.linkstate import LinkState
    from flwr.supercore.object_store import ObjectStore

__all__ = ["HOLD_S", "MAX_HELD", "MessageArrivals", "hold_empty_pulls"]

#: The longest an empty ask is held (shorter than every timeout on its way: the gateway's 300 s).
HOLD_S = 0.5
#: Asks held at once, at most.
MAX_HELD = 16


class MessageArrivals:
    """Which nodes had a message stored since they last asked; a held ask waits for its own."""

    def __init__(self) -> None:
        self._condition = threading.Condition()
        self._arrived: set[int] = set()

    def arrived(self, node_id: int) -> None:
        """A message for ``node_id`` was stored: wake its held ask."""
        with self._condition:
            self._arrived.add(node_id)
            self._condition.notify_all()

    def taken(self, node_id: int) -> None:
        """``node_id`` has asked and got its messages."""
        with self._condition:
            self._arrived.discard(node_id)

    def wait(self, node_id: int, timeout: float) -> bool:
        """Wait up to ``timeout`` s for a message for ``node_id``; True if one arrived."""
        with self._condition:
            arrived = self._condition.wait_for(lambda: node_id in self._arrived, timeout)
            self._arrived.discard(node_id)
            return arrived


def hold_empty_pulls(link_state: "LinkState", arrivals: MessageArrivals | None = None) -> None:
    """Make this process's Fleet API hold empty asks until ``link_state`` stores one for them."""
    from flwr.superlink.servicer.fleet import fleet_handlers  # noqa: PLC0415

    arrivals = arrivals or MessageArrivals()
    store_message: Callable[[Message], str | None] = link_state.store_message_ins

    def store_and_wake(message: "Message") -> str | None:
        message_id = store_message(message)
        if message_id is not None:
            arrivals.arrived(message.metadata.dst_node_id)
        return message_id

    link_state.store_message_ins = store_and_wake  # type: ignore[method-assign]
    pull = fleet_handlers.pull_messages
    slots = threading.BoundedSemaphore(MAX_HELD)

    def held_pull(
        request: "PullMessagesRequest", state: "LinkState", store: "ObjectStore"
    ) -> "PullMessagesResponse":
        response = pull(request, state, store)
        node_id = request.node.node_id
        if response.messages_list:
            arrivals.taken(node_id)
            return response
        if not slots.acquire(blocking=False):
            return response
        try:
            arrived = arrivals.wait(node_id, HOLD_S)
        finally:
            slots.release()
        return pull(request, state, store) if arrived else response

    fleet_handlers.pull_messages = held_pull
