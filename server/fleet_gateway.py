"""The only listener sites can reach: a TLS front that forwards the Fleet API and nothing else.

Flower 1.41 serves the Fleet API (site nodes), the Control API (start runs, enrol nodes) and
the Runtime API on one port, and the Control API has no authentication in the open-source
build. medfed therefore binds the SuperLink to the coordinator's loopback interface and puts
this gateway on the public address: it forwards ``POST /v1/fleet/<rpc>`` to the SuperLink
over TLS and answers everything else with 403, so a site holding the CA and its key can
train but cannot start runs, list runs or enrol nodes. SuperNode authentication is
unaffected: the signature headers are forwarded as they are and checked by the SuperLink.

Everything before authentication is bounded here: concurrent connections (uvicorn's
``limit_concurrency``, 503 beyond it), requests per peer address (429 beyond a token bucket,
:mod:`server.rate_limit`) and the request body (413 while it streams in).
"""

import hashlib
import logging
import re
import ssl
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from server.rate_limit import PeerRateLimit

__all__ = [
    "DEFAULT_MAX_BODY_BYTES",
    "DEFAULT_MAX_CONNECTIONS",
    "DEFAULT_REQUESTS_PER_S",
    "DEFAULT_REQUEST_BURST",
    "FLEET_PATH",
    "PUBLIC_KEY_HEADER",
    "TrafficLog",
    "create_fleet_gateway",
    "serve_fleet_gateway",
    "site_key_fingerprint",
]

logger = logging.getLogger(__name__)

#: Largest request body forwarded (64 MiB): generous for a model update; set it above twice
#: the serialised model (SecAgg+ masked vectors) with ``medfed-server start --max-body-mib``.
DEFAULT_MAX_BODY_BYTES = 64 * 2**20

#: Requests per second and burst allowed to one peer address. A site node measured 13/s at
#: most and 48 in any 10 s (3 sites, 32x32 CNN, SecAgg+); a model of many arrays pulls one
#: object per array in a burst, hence the large burst. Sites behind one NAT share a bucket.
DEFAULT_REQUESTS_PER_S = 50.0
DEFAULT_REQUEST_BURST = 2000.0
#: Concurrent connections the gateway serves before answering 503.
DEFAULT_MAX_CONNECTIONS = 256

#: The header in which a SuperNode sends its public key (flwr.supercore.constant).
PUBLIC_KEY_HEADER = "flwr-public-key"

#: The paths forwarded: one Fleet RPC name, no dots, slashes or escapes.
FLEET_PATH = re.compile(r"/v1/fleet/[a-z][a-z-]{0,63}")

# Hop-by-hop headers (RFC 9110 section 7.6.1) and those httpx recomputes.
_NOT_FORWARDED = {
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "host",
    "content-length",
    "content-encoding",
}


def _forwardable(headers: httpx.Headers | dict[str, str]) -> dict[str, str]:
    return {key: value for key, value in headers.items() if key.lower() not in _NOT_FORWARDED}


def site_key_fingerprint(public_key_header: str) -> str:
    """Short, stable name of a site key as it travels in the Fleet header (base64 of PEM)."""
    return hashlib.sha256(public_key_header.encode()).hexdigest()[:16]


class TrafficLog:
    """One CSV row per forwarded call: time, RPC, site key fingerprint, bytes up and down.

    Sizes are of the HTTP bodies (the protobuf messages), before TLS.
    """

    HEADER = "time,rpc,site_key,bytes_up,bytes_down,status\n"

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        if not path.exists():
            path.write_text(self.HEADER, encoding="utf-8")

    def record(self, rpc: str, public_key: str, up: int, down: int, status: int) -> None:
        """Append one call."""
        site = site_key_fingerprint(public_key) if public_key else "-"
        with self.path.open("a", encoding="utf-8") as handle:
            handle.write(f"{time.time():.3f},{rpc},{site},{up},{down},{status}\n")


async def _bounded_body(request: Request, limit: int) -> bytes | None:
    """The request body, or None as soon as it (declared or streamed) passes ``limit`` bytes."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        return None
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            return None
    return bytes(body)


def create_fleet_gateway(
    upstream: str,
    verify: str | bool,
    timeout_s: float = 300.0,
    traffic_log: Path | None = None,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    rate_limit: PeerRateLimit | None = None,
) -> Starlette:
    """An ASGI app forwarding the Fleet API to ``upstream`` (``https://127.0.0.1:PORT``).

    ``verify`` is the CA certificate file the SuperLink's certificate must chain to; with
    ``traffic_log`` every forwarded call's size is appended there (see :class:`TrafficLog`).
    A body above ``max_body_bytes`` is answered 413 while it streams in, before anything is
    forwarded (and so before the SuperLink authenticates the caller): memory stays bounded.
    A peer address past ``rate_limit`` (default :data:`DEFAULT_REQUESTS_PER_S` after a burst
    of :data:`DEFAULT_REQUEST_BURST`) gets 429 before anything else is looked at.
    """
    traffic = TrafficLog(traffic_log) if traffic_log is not None else None
    limit = rate_limit or PeerRateLimit(DEFAULT_REQUESTS_PER_S, DEFAULT_REQUEST_BURST)
    limited: set[str] = set()
    context = ssl.create_default_context(cafile=verify) if isinstance(verify, str) else verify
    client = httpx.AsyncClient(base_url=upstream, verify=context, timeout=timeout_s)

    async def forward(request: Request) -> Response:
        path = request.url.path
        peer = request.client.host if request.client else "?"
        if not limit.allow(peer):
            wait_s = limit.retry_after_s(peer)
            if peer not in limited:  # one line when a peer starts being refused, not per call
                if len(limited) >= 10_000:  # bounded memory, at worst a repeated line
                    limited.clear()
                limited.add(peer)
                logger.warning("refusing %s: above %g requests/s", peer, limit.rate)
            return PlainTextResponse(
                f"medfed fleet gateway: more than {limit.rate:g} requests/s from {peer}\n",
                status_code=429,
                headers={"retry-after": str(max(1, round(wait_s)))},
            )
        limited.discard(peer)
        if request.method != "POST" or not FLEET_PATH.fullmatch(path) or request.url.query:
            logger.warning(
                "refused %s %s from %s: not a Fleet API call", request.method, path, peer
            )
            return PlainTextResponse(
                "medfed fleet gateway: only the Fleet API is served on this address\n",
                status_code=403,
            )
        body = await _bounded_body(request, max_body_bytes)
        if body is None:
            logger.warning("refused %s from %s: body above %d bytes", path, peer, max_body_bytes)
            return PlainTextResponse(
                f"medfed fleet gateway: request body above {max_body_bytes} bytes\n",
                status_code=413,
                headers={"connection": "close"},
            )
        try:
            reply = await client.post(
                path, content=body, headers=_forwardable(dict(request.headers))
            )
        except httpx.HTTPError as exc:
            logger.error("SuperLink unreachable for %s from %s: %s", path, peer, exc)
            return PlainTextResponse("medfed fleet gateway: SuperLink unavailable\n", 502)
        if traffic is not None:
            key = request.headers.get(PUBLIC_KEY_HEADER, "")
            rpc = path.rsplit("/", 1)[-1]
            traffic.record(rpc, key, len(body), len(reply.content), reply.status_code)
        return Response(
            content=reply.content,
            status_code=reply.status_code,
            headers=_forwardable(reply.headers),
        )

    @asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        yield
        await client.aclose()

    methods = ["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS"]
    return Starlette(routes=[Route("/{path:path}", forward, methods=methods)], lifespan=lifespan)


def serve_fleet_gateway(
    gateway: Starlette,
    host: str,
    port: int,
    max_connections: int = DEFAULT_MAX_CONNECTIONS,
    **tls: Any,  # noqa: ANN401 (uvicorn.run's ssl_* keyword arguments, passed as they are)
) -> None:
    """Serve ``gateway`` until interrupted, answering 503 past ``max_connections`` at once."""
    # uvicorn counts the connection asking among the open ones, so its limit is one above ours.
    uvicorn.run(
        gateway, host=host, port=port, log_level="warning", limit_concurrency=max_connections + 1,
        **tls,
    )  # fmt: skip
