"""A TCP proxy that can make a server unreachable for a while: R2 outages on the devstack.

Put it in front of the moto server and point `R2_ENDPOINT` (the pipeline's and the pods') at
`proxy.url`; then
- `refuse(seconds)`: the port stops listening and open connections are reset, so clients get
  "connection refused" / "connection reset", as when R2's edge drops out;
- `freeze(seconds)`: connections are accepted but no byte moves either way (open ones stall
  mid-request), as when a network path blackholes; clients only notice through their timeouts.
Outside a window bytes pass through untouched (plain HTTP: the proxy never parses them).

    proxy = FaultProxy("127.0.0.1", s3_port).start()
    proxy.refuse(15)     # returns at once; the window ends by itself
    proxy.stop()
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import select
import socket
import struct
import threading
import time
from dataclasses import dataclass, field

log = logging.getLogger(__name__)

_POLL_S = 0.1


@dataclass
class _Window:
    mode: str = ""  # "", "refuse" or "freeze"
    until: float = 0.0

    def active(self, mode: str) -> bool:
        return self.mode == mode and time.monotonic() < self.until


@dataclass
class FaultProxy:
    target_host: str
    target_port: int
    listen_port: int = 0
    _listener: socket.socket | None = None
    _window: _Window = field(default_factory=_Window)
    _conns: set[socket.socket] = field(default_factory=set)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _stopping: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    # What happened, for reports: connections accepted, refused or reset, and windows.
    stats: dict[str, int] = field(default_factory=lambda: {"accepted": 0, "reset": 0, "windows": 0})

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.listen_port}"

    def start(self) -> FaultProxy:
        self._listen()
        self._thread = threading.Thread(target=self._serve, name="fault-proxy", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._close_listener()
        self._reset_all()

    def refuse(self, seconds: float) -> None:
        """Refuse and reset every connection for `seconds` (from now)."""
        self._open_window("refuse", seconds)
        with self._lock:
            self._close_listener()  # at once: no connection slips in before the loop notices
        self._reset_all()

    def freeze(self, seconds: float) -> None:
        """Accept connections but move no byte for `seconds` (from now)."""
        self._open_window("freeze", seconds)

    def heal(self) -> None:
        """End any window now."""
        with self._lock:
            self._window = _Window()

    def faulty(self) -> bool:
        return self._window.active("refuse") or self._window.active("freeze")

    # ---------------------------------------------------------------- internals

    def _open_window(self, mode: str, seconds: float) -> None:
        with self._lock:
            self._window = _Window(mode, time.monotonic() + seconds)
            self.stats["windows"] += 1
        log.info("fault proxy %s: %s for %.1f s", self.url, mode, seconds)

    def _listen(self) -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", self.listen_port))
        sock.listen(128)
        sock.settimeout(_POLL_S)
        self.listen_port = sock.getsockname()[1]
        self._listener = sock

    def _close_listener(self) -> None:
        if self._listener is not None:
            # shutdown first: stops listening now, even while accept() waits on it
            with contextlib.suppress(OSError):
                self._listener.shutdown(socket.SHUT_RDWR)
            self._listener.close()
            self._listener = None

    def _serve(self) -> None:
        while not self._stopping.is_set():
            with self._lock:
                if self._window.active("refuse"):
                    # Not listening at all: the kernel answers SYNs with RST (refused).
                    self._close_listener()
                elif self._listener is None:
                    self._listen()
                listener = self._listener
            if listener is None:
                time.sleep(_POLL_S)
                continue
            try:
                client, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                continue
            self.stats["accepted"] += 1
            threading.Thread(target=self._pipe, args=(client,), daemon=True).start()

    def _pipe(self, client: socket.socket) -> None:
        upstream: socket.socket | None = None
        try:
            self._track(client)
            while self._window.active("freeze"):  # a frozen path: the SYN got through, no data
                if self._stopping.wait(_POLL_S):
                    return
            upstream = socket.create_connection((self.target_host, self.target_port), timeout=10)
            self._track(upstream)
            self._pump(client, upstream)
        except OSError:
            pass
        finally:
            for sock in (client, upstream):
                if sock is not None:
                    self._untrack(sock)
                    sock.close()

    def _pump(self, client: socket.socket, upstream: socket.socket) -> None:
        peers = {client: upstream, upstream: client}
        while not self._stopping.is_set():
            if self._window.active("freeze"):
                time.sleep(_POLL_S)
                continue
            readable, _, _ = select.select(list(peers), [], [], _POLL_S)
            for sock in readable:
                data = sock.recv(65536)
                if not data:
                    return
                peers[sock].sendall(data)

    def _track(self, sock: socket.socket) -> None:
        with self._lock:
            self._conns.add(sock)

    def _untrack(self, sock: socket.socket) -> None:
        with self._lock:
            self._conns.discard(sock)

    def _reset_all(self) -> None:
        with self._lock:
            conns = list(self._conns)
        for sock in conns:
            try:  # linger 0: close sends RST, the peer sees "connection reset by peer"
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            self.stats["reset"] += 1


def main() -> None:
    """`python -m rp_devstack.fault_proxy --target 127.0.0.1:9000 [--refuse-after S --for S]`."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", required=True, help="host:port to forward to")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--mode", choices=["refuse", "freeze"], default=None)
    parser.add_argument("--after", type=float, default=0.0, help="seconds before the window")
    parser.add_argument("--for", dest="seconds", type=float, default=15.0)
    args = parser.parse_args()
    host, _, port = args.target.rpartition(":")
    proxy = FaultProxy(host or "127.0.0.1", int(port), args.port).start()
    print(proxy.url, flush=True)
    try:
        if args.mode:
            time.sleep(args.after)
            getattr(proxy, args.mode)(args.seconds)
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        proxy.stop()


if __name__ == "__main__":
    main()
