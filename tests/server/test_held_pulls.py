"""A site's empty ask held at the SuperLink until a message for that site is stored.

The arrivals on real threads here; on real SuperLink and SuperNode processes every deployment
test's rounds go through the held asks (tests/deployment/), and bench/secagg_overhead.py
measures what they save.
"""

import inspect
import threading
import time

from flwr.server.superlink.fleet.grpc_rere import fleet_servicer
from flwr.server.superlink.linkstate.in_memory_linkstate import InMemoryLinkState
from flwr.superlink.routers.fleet import router

from server.held_pulls import MessageArrivals


def _waiter(
    arrivals: MessageArrivals, node_id: int, out: list[tuple[bool, float]]
) -> threading.Thread:
    def wait() -> None:
        started = time.monotonic()
        arrived = arrivals.wait(node_id, 2.0)
        out.append((arrived, time.monotonic() - started))

    thread = threading.Thread(target=wait)
    thread.start()
    return thread


def test_a_held_ask_wakes_for_its_own_node_only() -> None:
    arrivals = MessageArrivals()
    mine: list[tuple[bool, float]] = []
    other: list[tuple[bool, float]] = []
    threads = [_waiter(arrivals, 7, mine), _waiter(arrivals, 8, other)]
    time.sleep(0.1)
    arrivals.arrived(7)
    threads[0].join(timeout=5)
    assert mine and mine[0][0] and mine[0][1] < 1.0
    assert not other  # node 8 still waits
    threads[1].join(timeout=5)
    assert other == [(False, other[0][1])] and other[0][1] >= 1.9


def test_an_arrival_before_the_ask_answers_it_at_once_and_a_taken_one_does_not() -> None:
    arrivals = MessageArrivals()
    arrivals.arrived(3)  # stored while the site was not asking
    started = time.monotonic()
    assert arrivals.wait(3, 2.0) and time.monotonic() - started < 0.1
    arrivals.arrived(3)
    arrivals.taken(3)  # its ask found the message before waiting
    assert not arrivals.wait(3, 0.1)


def test_both_fleet_transports_pull_through_the_handler_the_superlink_holds() -> None:
    """server/held_pulls.py replaces fleet_handlers.pull_messages and store_message_ins."""
    for transport in (fleet_servicer, router):
        assert "fleet_handlers.pull_messages(" in inspect.getsource(transport)
    # the coordinator's pushes reach the instance's store_message_ins (the one wrapped)
    assert "self.store_message_ins(message)" in inspect.getsource(
        InMemoryLinkState.store_message_and_object_tree
    )
