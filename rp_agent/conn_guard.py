"""Bounds on what a stranger can hold on the pod's public port, before any token is checked.

The token proxy (proxy.py) answers a stranger's request with 401 as soon as its headers are in,
but aiohttp alone waits for those headers as long as the peer likes: a few dozen connections
that send nothing, or one header byte now and then, would stay open for good and eat the pod's
sockets and memory. So every connection passes through this guard first:

- header time limit: a connection whose first request's headers (up to the blank line) are not
  complete within `header_timeout_s` of its opening is closed;
- cap on unauthenticated connections: connections that have not yet shown the token (still
  sending headers, or being refused) count against `max_unauthenticated`; one more and the
  OLDEST of them is closed. The oldest, not the newest: an attacker holding the cap must not
  lock the pipeline out, and a real client sends its headers within milliseconds of opening.
Once the proxy has accepted a request's token (`authorized`), its connection leaves both
bounds: an authorised keep-alive connection or WebSocket lives as long as it is used.

The guard wraps aiohttp's protocol objects and only watches bytes go by (it looks for the end
of the header block); parsing stays aiohttp's.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass

log = logging.getLogger("rp_agent.proxy")

HEADER_TIMEOUT_ENV = "RP_PROXY_HEADER_TIMEOUT_S"
MAX_UNAUTHENTICATED_ENV = "RP_PROXY_MAX_UNAUTHENTICATED"
DEFAULT_HEADER_TIMEOUT_S = 10.0
DEFAULT_MAX_UNAUTHENTICATED = 64
END_OF_HEADERS = b"\r\n\r\n"


@dataclass(frozen=True)
class ConnectionLimits:
    header_timeout_s: float = DEFAULT_HEADER_TIMEOUT_S
    max_unauthenticated: int = DEFAULT_MAX_UNAUTHENTICATED

    def __post_init__(self) -> None:
        if self.header_timeout_s <= 0:
            raise ValueError(
                f"{HEADER_TIMEOUT_ENV} must be > 0 seconds, got {self.header_timeout_s:g}"
            )
        if self.max_unauthenticated < 1:
            raise ValueError(
                f"{MAX_UNAUTHENTICATED_ENV} must be at least 1, got {self.max_unauthenticated}"
            )


class ConnectionGuard:
    """Makes guarded protocols (`protocol` is the factory for `loop.create_server`) around
    `inner`, aiohttp's request-handler factory (`AppRunner.server`)."""

    def __init__(self, inner: Callable[[], asyncio.Protocol], limits: ConnectionLimits) -> None:
        self.inner = inner
        self.limits = limits
        # Unauthenticated connections, oldest first (dicts keep insertion order).
        self.unauthenticated: dict[asyncio.BaseTransport, _Guarded] = {}
        self.closed_slow = 0  # closed by the header time limit
        self.closed_over_cap = 0  # closed to make room under the cap

    def protocol(self) -> asyncio.Protocol:
        return _Guarded(self.inner(), self)

    def authorized(self, transport: asyncio.BaseTransport | None) -> None:
        """The proxy accepted a token on this connection: it leaves the bounds."""
        guarded = self.unauthenticated.pop(transport, None) if transport is not None else None
        if guarded is not None:
            guarded.cancel_timer()

    def opened(self, transport: asyncio.BaseTransport, guarded: _Guarded) -> None:
        self.unauthenticated[transport] = guarded
        while len(self.unauthenticated) > self.limits.max_unauthenticated:
            oldest = next(iter(self.unauthenticated.values()))
            self.closed_over_cap += 1
            if self.closed_over_cap == 1 or self.closed_over_cap % 100 == 0:
                log.warning(
                    "more than %d connections without a token: closing the oldest (%d so far)",
                    self.limits.max_unauthenticated,
                    self.closed_over_cap,
                )
            oldest.abort()

    def forget(self, guarded: _Guarded) -> None:
        if guarded.transport is not None:
            self.unauthenticated.pop(guarded.transport, None)


class _Guarded(asyncio.Protocol):
    """aiohttp's protocol for one connection, plus the header timer. Everything is passed on."""

    def __init__(self, inner: asyncio.Protocol, guard: ConnectionGuard) -> None:
        self.inner = inner
        self.guard = guard
        self.transport: asyncio.BaseTransport | None = None
        self.timer: asyncio.TimerHandle | None = None
        self.tail = b""  # the last bytes seen, for an end of headers split across reads

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        loop = asyncio.get_running_loop()
        self.timer = loop.call_later(self.guard.limits.header_timeout_s, self.headers_too_slow)
        self.inner.connection_made(transport)
        self.guard.opened(transport, self)

    def data_received(self, data: bytes) -> None:
        if self.timer is not None:
            seen = self.tail + data
            if END_OF_HEADERS in seen:
                self.cancel_timer()
            else:
                self.tail = seen[-(len(END_OF_HEADERS) - 1) :]
        self.inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self.inner.eof_received()

    def connection_lost(self, exc: Exception | None) -> None:
        self.cancel_timer()
        self.guard.forget(self)
        self.inner.connection_lost(exc)

    def pause_writing(self) -> None:
        self.inner.pause_writing()

    def resume_writing(self) -> None:
        self.inner.resume_writing()

    def cancel_timer(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
            self.tail = b""

    def headers_too_slow(self) -> None:
        self.timer = None
        self.guard.closed_slow += 1
        if self.guard.closed_slow == 1 or self.guard.closed_slow % 100 == 0:
            log.warning(
                "closed a connection that sent no complete request headers within %.0f s "
                "(%d so far)",
                self.guard.limits.header_timeout_s,
                self.guard.closed_slow,
            )
        self.abort()

    def abort(self) -> None:
        self.cancel_timer()
        self.guard.forget(self)
        if self.transport is not None:
            self.transport.abort()  # type: ignore[attr-defined]
