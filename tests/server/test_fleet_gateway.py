"""The gateway forwards Fleet calls only: everything else is refused before it is forwarded."""

import select
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from common.flower_processes import free_port
from server.fleet_gateway import create_fleet_gateway
from server.rate_limit import PeerRateLimit


@pytest.fixture
def gateway() -> TestClient:
    # Nothing listens upstream: a forwarded call comes back 502, a refused one 403.
    return TestClient(create_fleet_gateway("http://127.0.0.1:9", verify=False, timeout_s=2.0))


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/v1/control/start-run"),
        ("POST", "/v1/control/register-node"),
        ("POST", "/v1/control/list-runs"),
        ("POST", "/v1/runtime/pull-messages"),
        ("POST", "/v1/fleet/../control/start-run"),
        ("POST", "/v1/fleet/%2e%2e/control/start-run"),
        ("POST", "/v1/fleet/pull-messages/../../control/list-runs"),
        ("POST", "/v1/fleet/pull-messages?x=1"),
        ("GET", "/v1/fleet/pull-messages"),
        ("GET", "/docs"),
        ("GET", "/openapi.json"),
    ],
)
def test_anything_but_a_fleet_call_is_refused(gateway: TestClient, method: str, path: str) -> None:
    reply = gateway.request(method, path, content=b"x")
    assert reply.status_code == 403
    assert "only the Fleet API" in reply.text


def test_a_fleet_call_is_forwarded(gateway: TestClient) -> None:
    reply = gateway.post("/v1/fleet/pull-messages", content=b"\x08\x01")
    assert reply.status_code == 502  # forwarded, and the (absent) SuperLink did not answer


def test_a_peer_past_its_request_rate_gets_429_before_anything_else() -> None:
    now = [0.0]
    limit = PeerRateLimit(rate=20.0, burst=5, clock=lambda: now[0])
    app = create_fleet_gateway("http://127.0.0.1:9", verify=False, timeout_s=2.0, rate_limit=limit)
    flooder = TestClient(app, client=("198.51.100.7", 4000))
    other = TestClient(app, client=("198.51.100.8", 4000))
    codes = [flooder.post("/v1/control/list-runs").status_code for _ in range(5)]
    assert codes == [403] * 5  # the burst: judged on its merits
    refused = flooder.post("/v1/fleet/pull-messages", content=b"\x08\x01")
    assert refused.status_code == 429 and refused.headers["retry-after"] == "1"
    assert other.post("/v1/fleet/pull-messages").status_code == 502  # its own bucket
    now[0] += 0.05  # one request's worth of refill at 20/s
    assert flooder.post("/v1/fleet/pull-messages").status_code == 502
    assert flooder.post("/v1/fleet/pull-messages").status_code == 429


def test_the_rate_limit_forgets_the_oldest_peers_beyond_its_table() -> None:
    now = [0.0]
    limit = PeerRateLimit(rate=1.0, burst=1, max_peers=2, clock=lambda: now[0])
    assert limit.allow("a") and not limit.allow("a")
    assert limit.allow("b") and limit.allow("c")  # "a" is forgotten: memory stays bounded
    assert limit.allow("a") and not limit.allow("a")
    now[0] = 1.0
    assert limit.allow("a")  # refilled at 1 request/s
    with pytest.raises(ValueError, match="must be positive"):
        PeerRateLimit(rate=float("nan"), burst=1)


# -- a body limit enforced while the body streams in, measured on a real gateway process --------

LIMIT_MIB = 16
GROWTH_BOUND_MIB = 64  # the stated bound: a 400 MiB body may not grow the gateway past this

MAX_CONNECTIONS = 4

_GATEWAY = f"""
import sys
from server.fleet_gateway import create_fleet_gateway, serve_fleet_gateway
app = create_fleet_gateway("http://127.0.0.1:9", verify=False, timeout_s=2.0,
                           max_body_bytes=int(sys.argv[2]) * 2**20)
serve_fleet_gateway(app, "127.0.0.1", int(sys.argv[1]), max_connections={MAX_CONNECTIONS})
"""


def _memory_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise AssertionError(field)


@pytest.fixture
def gateway_process() -> Iterator[tuple[int, int]]:
    port = free_port()
    process = subprocess.Popen([sys.executable, "-c", _GATEWAY, str(port), str(LIMIT_MIB)])
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert time.monotonic() < deadline and process.poll() is None
                time.sleep(0.1)
        yield process.pid, port
    finally:
        process.terminate()
        process.wait(timeout=10)


def _send(port: int, head: bytes, chunks: int, chunk: bytes) -> tuple[bytes, int]:
    """Send ``head`` then up to ``chunks`` chunks; the reply and how many chunks went out."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as conn:
        conn.sendall(head)
        sent = 0
        try:
            while sent < chunks and not select.select([conn], [], [], 0)[0]:
                conn.sendall(chunk)
                sent += 1
        except (BrokenPipeError, ConnectionResetError):
            pass
        return conn.recv(4096), sent


def test_an_oversized_streamed_body_gets_413_and_memory_stays_bounded(
    gateway_process: tuple[int, int],
) -> None:
    pid, port = gateway_process
    before = _memory_kib(pid, "VmRSS")
    mib = b"x" * 2**20
    chunk = b"%x\r\n" % len(mib) + mib + b"\r\n"
    head = b"POST /v1/fleet/push-messages HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
    reply, sent = _send(port, head, 400, chunk)  # 400 MiB, no length declared
    assert reply.startswith(b"HTTP/1.1 413"), reply[:200]
    assert sent < 400  # refused while streaming, not after reading it all
    growth_mib = (_memory_kib(pid, "VmHWM") - before) / 1024
    assert growth_mib < GROWTH_BOUND_MIB, f"gateway grew {growth_mib:.0f} MiB"

    declared = b"POST /v1/fleet/push-messages HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n"
    reply, _ = _send(port, declared % (400 * 2**20), 0, b"")
    assert reply.startswith(b"HTTP/1.1 413")  # a declared length is refused before any body
    small, _ = _send(port, b"POST /v1/fleet/pull-messages HTTP/1.1\r\nHost: x\r\n"
                     b"Content-Length: 2\r\n\r\n\x08\x01", 0, b"")  # fmt: skip
    assert small.startswith(b"HTTP/1.1 502")  # within the limit: forwarded (nothing upstream)


def _reply_within(conn: socket.socket, seconds: float) -> bytes:
    return conn.recv(4096) if select.select([conn], [], [], seconds)[0] else b""


def test_connections_past_the_limit_get_503_before_any_body_is_read(
    gateway_process: tuple[int, int],
) -> None:
    """Slow uploads (headers sent, body pending) hold every slot; the next caller gets 503."""
    _, port = gateway_process
    head = b"POST /v1/fleet/push-messages HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n"
    held: list[socket.socket] = []
    try:
        while True:  # one at a time, each seen waiting for its body before the next one
            conn = socket.create_connection(("127.0.0.1", port), timeout=10)
            conn.sendall(head + b"x")  # 1 of 1000 body bytes
            reply = _reply_within(conn, 0.5)
            if reply:
                conn.close()
                break
            held.append(conn)
            assert len(held) <= MAX_CONNECTIONS, "more slow uploads held than the limit"
        assert reply.startswith(b"HTTP/1.1 503"), reply[:200]
        assert len(held) == MAX_CONNECTIONS  # exactly the limit was served
        assert not any(_reply_within(conn, 0) for conn in held)  # still waiting, none dropped
    finally:
        for conn in held:
            conn.close()
    time.sleep(0.5)
    reply, _ = _send(port, b"POST /v1/fleet/pull-messages HTTP/1.1\r\nHost: x\r\n"
                     b"Content-Length: 2\r\n\r\n\x08\x01", 0, b"")  # fmt: skip
    assert reply.startswith(b"HTTP/1.1 502")  # a slot again: forwarded (nothing upstream)
