"""The coordinator collects the sites' replies promptly, not on flwr 1.41 HttpGrid's 3 s tick."""

import time
from collections.abc import Iterable
from types import SimpleNamespace

from server import secure_rounds


class _SlowSites:
    """Stands in for the SuperLink: each pushed message's reply is ready ``delay`` s later."""

    def __init__(self, delays: list[float]) -> None:
        self.delays, self.ready_at = delays, {}
        self.pulled_at: list[float] = []

    def push_messages(self, messages: Iterable[object]) -> list[str]:
        ids = [f"m{k}" for k, _ in enumerate(messages)]
        now = time.monotonic()
        self.ready_at = {i: now + d for i, d in zip(ids, self.delays, strict=True)}
        return ids

    def pull_messages(self, message_ids: Iterable[str]) -> list[SimpleNamespace]:
        now = time.monotonic()
        self.pulled_at.append(now)
        ready = [i for i in message_ids if self.ready_at[i] <= now]
        for i in ready:
            del self.ready_at[i]
        return [SimpleNamespace(metadata=SimpleNamespace(reply_to_message_id=i)) for i in ready]


def test_replies_are_collected_within_a_poll_of_their_arrival() -> None:
    sites = _SlowSites([0.1, 0.5, 0.6])
    grid = secure_rounds._PromptGrid(sites)  # type: ignore[arg-type]
    started = time.monotonic()
    replies = grid.send_and_receive(["a", "b", "c"])  # type: ignore[list-item]
    waited = time.monotonic() - started
    assert sorted(r.metadata.reply_to_message_id for r in replies) == ["m0", "m1", "m2"]
    assert waited >= 0.6  # it waited for the last reply
    # Polled every REPLY_POLL_S (Flower's grid: once, then after 3 s): several pulls before the
    # last reply was ready, never two closer than the interval. No upper bound on wall time:
    # a loaded machine may sleep longer, which is not what this test is about.
    gaps = [b - a for a, b in zip(sites.pulled_at, sites.pulled_at[1:], strict=False)]
    assert len(sites.pulled_at) >= 2
    assert min(gaps) >= secure_rounds.REPLY_POLL_S * 0.9


def test_a_stage_timeout_returns_the_replies_that_came() -> None:
    sites = _SlowSites([0.05, 60.0])  # the second site never answers in time
    grid = secure_rounds._PromptGrid(sites)  # type: ignore[arg-type]
    started = time.monotonic()
    replies = list(grid.send_and_receive(["a", "b"], timeout=0.8))  # type: ignore[list-item]
    assert [r.metadata.reply_to_message_id for r in replies] == ["m0"]
    assert time.monotonic() - started >= 0.8  # it waited the whole timeout for the second
    assert sites.pulled_at[-1] - started < 60.0  # and gave up long before the second came
