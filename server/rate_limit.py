"""Request rate limits per peer address: a token bucket each, in bounded memory.

The Fleet gateway answers a peer beyond its rate with 429 before anything else (path checks,
body, forwarding, and so before the SuperLink authenticates it). A bucket holds ``burst``
requests and refills at ``rate`` per second; the least recently seen peers are forgotten
beyond ``max_peers`` (a forgotten peer starts again with a full bucket).
"""

import time
from collections import OrderedDict
from collections.abc import Callable

__all__ = ["PeerRateLimit"]


class PeerRateLimit:
    """One token bucket per peer address."""

    def __init__(
        self,
        rate: float,
        burst: float,
        max_peers: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not rate > 0 or not burst >= 1 or max_peers < 1:
            raise ValueError(f"rate {rate} and burst {burst} must be positive (burst >= 1)")
        self.rate, self.burst, self.max_peers, self.clock = rate, burst, max_peers, clock
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()

    def allow(self, peer: str) -> bool:
        """Take one request from ``peer``'s bucket: False if it is empty (refuse the request)."""
        now = self.clock()
        tokens, last = self._buckets.pop(peer, (self.burst, now))
        tokens = min(self.burst, tokens + (now - last) * self.rate)
        allowed = tokens >= 1
        self._buckets[peer] = (tokens - 1 if allowed else tokens, now)
        if len(self._buckets) > self.max_peers:
            self._buckets.popitem(last=False)
        return allowed

    def retry_after_s(self, peer: str) -> float:
        """Seconds until ``peer`` has one request in its bucket again."""
        tokens, _ = self._buckets.get(peer, (self.burst, 0.0))
        return max(0.0, (1 - tokens) / self.rate)
