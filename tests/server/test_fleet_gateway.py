"""The gateway forwards Fleet calls only: everything else is refused before it is forwarded."""

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
