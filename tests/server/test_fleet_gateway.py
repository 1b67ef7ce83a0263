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

from server.fleet_gateway import create_fleet_gateway


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


# -- a body limit enforced while the body streams in, measured on a real gateway process --------

LIMIT_MIB = 16
GROWTH_BOUND_MIB = 64  # the stated bound: a 400 MiB body may not grow the gateway past this

_GATEWAY = """
import sys, uvicorn
from server.fleet_gateway import create_fleet_gateway
app = create_fleet_gateway("http://127.0.0.1:9", verify=False, timeout_s=2.0,
                           max_body_bytes=int(sys.argv[2]) * 2**20)
uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning")
"""


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _memory_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise AssertionError(field)


@pytest.fixture
def gateway_process() -> Iterator[tuple[int, int]]:
    port = _free_port()
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
