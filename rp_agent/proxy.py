"""`rp-agent proxy`: the pod's public ComfyUI port, open only to holders of the pod's token.

RunPod publishes every HTTP port of a pod at `https://<pod id>-<port>.proxy.runpod.net` to the
whole internet, and ComfyUI has no authentication. So ComfyUI listens on loopback only and this
proxy owns the public port. A request passes when it carries the pod's token (env
`RP_POD_TOKEN`) in one of three forms:
- `Authorization: Bearer <token>`: the pipeline's clients (HTTP and the /ws upgrade);
- `?token=<token>` on a GET: a person's browser. The proxy answers with an HttpOnly cookie and a
  redirect to the same URL without the token, so the token leaves the address bar and history;
- that cookie: every later request of the browser, the /ws upgrade included.
Everything else gets 401 with an empty body; nothing of it reaches ComfyUI. A pod started
without a token refuses every request (503) rather than opening up.

What a stranger can hold before the token is checked is bounded (conn_guard.py): a time limit on
a request's headers and a cap on connections without a token; a refused request's connection
is closed with the answer.

Requests and responses are streamed chunk by chunk (a multi-GB /view download never sits in
memory), and a WebSocket upgrade becomes two WebSockets bridged message by message.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import signal
from collections.abc import Iterable

import aiohttp
from aiohttp import WSCloseCode, WSMsgType, web
from multidict import CIMultiDict, CIMultiDictProxy

from rp_agent.conn_guard import ConnectionGuard, ConnectionLimits

log = logging.getLogger("rp_agent.proxy")

TOKEN_ENV = "RP_POD_TOKEN"
COOKIE_NAME = "rp_pod_token"
QUERY_NAME = "token"
# A token this short could be guessed; treat it as no token at all.
MIN_TOKEN_LENGTH = 16
CHUNK_BYTES = 256 * 1024

# Connection-level headers (RFC 9110 7.6.1) describe one hop and must not be forwarded; Host is
# set by us; Content-Length is recomputed by whoever writes the body.
HOP_BY_HOP = frozenset(
    h.lower()
    for h in (
        "Connection",
        "Keep-Alive",
        "Proxy-Authenticate",
        "Proxy-Authorization",
        "TE",
        "Trailer",
        "Transfer-Encoding",
        "Upgrade",
    )
)
# Headers the WebSocket handshake owns on each leg (aiohttp writes its own).
WS_HANDSHAKE = frozenset(
    h.lower()
    for h in (
        "Sec-WebSocket-Key",
        "Sec-WebSocket-Version",
        "Sec-WebSocket-Extensions",
        "Sec-WebSocket-Accept",
        "Sec-WebSocket-Protocol",
    )
)


def usable_token(token: str | None) -> str | None:
    token = (token or "").strip()
    return token if len(token) >= MIN_TOKEN_LENGTH else None


def matches(presented: str | None, token: str) -> bool:
    # Constant-time: the comparison must not tell a stranger how much of a guess was right.
    if not presented:
        return False
    return hmac.compare_digest(presented.encode(), token.encode())


def bearer(request: web.BaseRequest) -> str | None:
    scheme, _, value = request.headers.get("Authorization", "").partition(" ")
    return value.strip() if scheme.lower() == "bearer" else None


def is_websocket(request: web.BaseRequest) -> bool:
    return request.headers.get("Upgrade", "").lower() == "websocket"


def forwarded_headers(request: web.BaseRequest, drop: Iterable[str] = ()) -> CIMultiDict[str]:
    """The client's headers minus hop-by-hop ones and our credentials. Host stays as the client
    sent it: ComfyUI refuses (403) a request whose Origin does not match a loopback Host."""
    dropped = HOP_BY_HOP | {"authorization", "cookie", "content-length"} | set(drop)
    headers = CIMultiDict(
        (name, value) for name, value in request.headers.items() if name.lower() not in dropped
    )
    other_cookies = [f"{k}={v}" for k, v in request.cookies.items() if k != COOKIE_NAME]
    if other_cookies:
        headers["Cookie"] = "; ".join(other_cookies)
    if request.remote:
        earlier = request.headers.get("X-Forwarded-For")
        headers["X-Forwarded-For"] = f"{earlier}, {request.remote}" if earlier else request.remote
    headers.setdefault("X-Forwarded-Proto", request.scheme)
    return headers


def response_headers(upstream: CIMultiDictProxy[str]) -> CIMultiDict[str]:
    return CIMultiDict(
        (name, value)
        for name, value in upstream.items()
        if name.lower() not in HOP_BY_HOP and name.lower() != "content-length"
    )


class TokenProxy:
    """An aiohttp application forwarding authorised requests to `upstream` (host:port)."""

    def __init__(
        self, upstream: str, token: str | None, guard: ConnectionGuard | None = None
    ) -> None:
        self.upstream = f"http://{upstream}"
        self.token = usable_token(token)
        self.guard = guard  # told when a connection shows the token (see conn_guard.py)
        self.session: aiohttp.ClientSession | None = None
        # The browser-side sockets of the open bridges, closed on shutdown (see _close_sockets).
        self.sockets: set[web.WebSocketResponse] = set()

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self.handle)
        app.on_startup.append(self._open_session)
        app.on_shutdown.append(self._close_sockets)
        app.on_cleanup.append(self._close_session)
        return app

    async def _close_sockets(self, _app: web.Application) -> None:
        """On SIGTERM: close every bridged WebSocket (1001 going away). aiohttp's graceful
        shutdown waits for running handlers, and a bridge handler runs as long as its socket is
        open, so without this an open /ws (the pipeline's or a browser's) holds a pod stop up
        for the whole shutdown timeout."""
        await asyncio.gather(
            *(ws.close(code=WSCloseCode.GOING_AWAY) for ws in list(self.sockets)),
            return_exceptions=True,
        )

    async def _open_session(self, _app: web.Application) -> None:
        self.session = aiohttp.ClientSession(
            # Bytes pass through as ComfyUI encoded them; no timeout on a long download, but a
            # dead upstream is noticed at connect time.
            auto_decompress=False,
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=10),
            cookie_jar=aiohttp.DummyCookieJar(),
        )

    async def _close_session(self, _app: web.Application) -> None:
        if self.session is not None:
            await self.session.close()

    async def handle(self, request: web.Request) -> web.StreamResponse:
        if self.token is None:
            response = web.Response(
                status=503, text=f"this pod was started without {TOKEN_ENV}: it serves no one\n"
            )
            response.force_close()
            return response
        query_token = request.query.get(QUERY_NAME)
        if query_token is not None:
            if not matches(query_token, self.token):
                return self.refuse(request)
            if request.method in ("GET", "HEAD") and not is_websocket(request):
                if self.guard is not None:
                    self.guard.authorized(request.transport)
                return self.hand_out_cookie(request)
        elif not (
            matches(bearer(request), self.token)
            or matches(request.cookies.get(COOKIE_NAME), self.token)
        ):
            return self.refuse(request)
        if self.guard is not None:
            self.guard.authorized(request.transport)
        if is_websocket(request):
            return await self.bridge_websocket(request)
        return await self.forward(request)

    def refuse(self, request: web.Request) -> web.Response:
        log.info("refused %s %s from %s", request.method, request.path, request.remote)
        response = web.Response(status=401, headers={"WWW-Authenticate": 'Bearer realm="comfyui"'})
        response.force_close()  # a stranger gets no keep-alive connection to hold
        return response

    def hand_out_cookie(self, request: web.Request) -> web.Response:
        """Swap the token in the URL for a cookie, then send the browser to the clean URL."""
        clean = request.rel_url.without_query_params(QUERY_NAME)
        response = web.Response(
            status=303, headers={"Location": str(clean), "Cache-Control": "no-store"}
        )
        https = request.secure or request.headers.get("X-Forwarded-Proto", "").lower() == "https"
        response.set_cookie(
            COOKIE_NAME,
            self.token or "",
            httponly=True,
            secure=https,
            samesite="Lax",  # not sent on another site's POST/fetch: no cross-site prompts
            path="/",
        )
        return response

    def upstream_url(self, request: web.Request) -> str:
        url = request.rel_url
        if QUERY_NAME in url.query:
            url = url.without_query_params(QUERY_NAME)
        return self.upstream + url.raw_path_qs

    async def forward(self, request: web.Request) -> web.StreamResponse:
        assert self.session is not None
        headers = forwarded_headers(request)
        has_body = request.body_exists
        if has_body and request.content_length is not None:
            headers["Content-Length"] = str(request.content_length)
        try:
            upstream = await self.session.request(
                request.method,
                self.upstream_url(request),
                headers=headers,
                data=request.content if has_body else None,
                allow_redirects=False,
                skip_auto_headers=("User-Agent", "Accept-Encoding", "Content-Type"),
            )
        except aiohttp.ClientError as exc:
            log.warning("ComfyUI did not answer %s %s: %s", request.method, request.path, exc)
            return web.Response(status=502, text="ComfyUI is not answering (yet)\n")
        async with upstream:
            response = web.StreamResponse(
                status=upstream.status,
                reason=upstream.reason,
                headers=response_headers(upstream.headers),
            )
            if upstream.content_length is not None:
                response.content_length = upstream.content_length
            await response.prepare(request)
            if request.method != "HEAD":
                async for chunk in upstream.content.iter_chunked(CHUNK_BYTES):
                    await response.write(chunk)
            await response.write_eof()
            return response

    async def bridge_websocket(self, request: web.Request) -> web.StreamResponse:
        """Open ComfyUI's socket first (so a refusal there is an HTTP error here), then relay
        messages both ways until either side closes."""
        assert self.session is not None
        protocols = [
            p.strip()
            for p in request.headers.get("Sec-WebSocket-Protocol", "").split(",")
            if p.strip()
        ]
        try:
            upstream = await self.session.ws_connect(
                self.upstream_url(request),
                headers=forwarded_headers(request, drop=WS_HANDSHAKE),
                protocols=protocols,
                autoping=True,
                max_msg_size=0,  # ComfyUI's binary previews may be large
            )
        except aiohttp.WSServerHandshakeError as exc:
            return web.Response(status=exc.status or 502)
        except aiohttp.ClientError as exc:
            log.warning("ComfyUI refused the WebSocket %s: %s", request.path, exc)
            return web.Response(status=502, text="ComfyUI is not answering (yet)\n")
        client = web.WebSocketResponse(
            protocols=[upstream.protocol] if upstream.protocol else (), max_msg_size=0
        )
        await client.prepare(request)
        self.sockets.add(client)
        pumps = [
            asyncio.ensure_future(_pump(upstream, client)),
            asyncio.ensure_future(_pump(client, upstream)),
        ]
        try:
            await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
        finally:
            self.sockets.discard(client)
            # Close both while their pumps still read them: a socket closed with a reader
            # waiting is closed at once, whereas one nobody reads waits (up to 10 s) for the
            # peer's close reply, which a client that is not reading right now never sends.
            await upstream.close()
            await client.close()
            for pump in pumps:
                pump.cancel()
        return client


async def _pump(
    source: web.WebSocketResponse | aiohttp.ClientWebSocketResponse,
    sink: web.WebSocketResponse | aiohttp.ClientWebSocketResponse,
) -> None:
    try:
        async for message in source:
            if message.type == WSMsgType.TEXT:
                await sink.send_str(message.data)
            elif message.type == WSMsgType.BINARY:
                await sink.send_bytes(message.data)
            else:  # CLOSE / ERROR: the bridge ends
                return
    except (ConnectionError, aiohttp.ClientError, RuntimeError) as exc:
        # The other side went away mid-message: the bridge ends, the caller closes both.
        log.debug("WebSocket bridge closed: %s", exc)


def parse_address(text: str) -> tuple[str, int]:
    """`host:port` -> (host, port); raises ValueError with the reason."""
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"{text!r} is not HOST:PORT (e.g. 0.0.0.0:8188)")
    return host.strip("[]"), int(port)


def serve(
    listen: str, upstream: str, token: str | None, limits: ConnectionLimits | None = None
) -> None:
    """Run until SIGTERM/SIGINT, then shut down cleanly (open bridges closed, a download in
    flight given a few seconds)."""
    host, port = parse_address(listen)
    parse_address(upstream)
    limits = limits or ConnectionLimits()
    proxy = TokenProxy(upstream, token)
    if proxy.token is None:
        log.error(
            "%s is not set (or shorter than %d characters): every request will be refused",
            TOKEN_ENV,
            MIN_TOKEN_LENGTH,
        )
    log.info(
        "proxy on %s:%d -> ComfyUI at %s (token required; headers within %.0f s, at most %d "
        "connections without a token)",
        host,
        port,
        upstream,
        limits.header_timeout_s,
        limits.max_unauthenticated,
    )
    asyncio.run(_serve(proxy, host, port, limits))


async def _serve(proxy: TokenProxy, host: str, port: int, limits: ConnectionLimits) -> None:
    # access_log=None: the default access line holds the query string, i.e. `?token=`.
    runner = web.AppRunner(proxy.app(), access_log=None, shutdown_timeout=5)
    await runner.setup()
    assert runner.server is not None
    proxy.guard = ConnectionGuard(runner.server, limits)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    try:
        server = await loop.create_server(proxy.guard.protocol, host, port, reuse_address=True)
    except OSError:
        await runner.cleanup()
        raise
    try:
        await stop.wait()
    finally:
        server.close()
        await runner.cleanup()
