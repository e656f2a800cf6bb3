"""A loopback TCP proxy that counts round trips and can add latency.

Put it between a client and PostgreSQL to see what the wire sees: each time
the client sends after having heard from the server (or first) is one round
trip, however many packets it takes. ``delay`` holds every chunk that long
in each direction, which makes a round trip saved or added visible in time
the way a network between an app and its database would.

It is a measuring tool for tests and benchmarks, not a pooler: plain TCP,
no TLS, threads per connection. :meth:`RoundTripProxy.sever` and
:meth:`RoundTripProxy.outage` play network failures and restarts. With
``record=True`` it also keeps the bytes it forwards, to show what a client
really sent and what the server answered.
"""

from __future__ import annotations

import socket
import threading
import time
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from types import TracebackType

_CHUNK = 65536


class _Link:
    """One client connection and its server connection."""

    def __init__(self, proxy: RoundTripProxy, client: socket.socket, server: socket.socket) -> None:
        self.proxy = proxy
        self.client = client
        self.server = server
        self.client_spoke_last = False

    def start(self) -> None:
        for source, target, upstream in ((self.client, self.server, True), (self.server, self.client, False)):
            threading.Thread(target=self._pump, args=(source, target, upstream), daemon=True).start()

    def close(self) -> None:
        for sock in (self.client, self.server):
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()

    def _pump(self, source: socket.socket, target: socket.socket, upstream: bool) -> None:
        delay = self.proxy.delay
        queue: deque[tuple[float, bytes]] = deque()
        ready = threading.Condition()
        if delay:
            threading.Thread(target=self._deliver, args=(queue, ready, target), daemon=True).start()
        try:
            while data := source.recv(_CHUNK):
                # Counted on receipt, before forwarding: the other side cannot
                # answer before this is forwarded, so the flag is never stale.
                self.proxy._observe(self, upstream, data)
                if delay:
                    with ready:
                        queue.append((time.perf_counter() + delay, data))
                        ready.notify()
                else:
                    target.sendall(data)
        except OSError:
            pass
        finally:
            if delay:
                with ready:
                    queue.append((0.0, b""))
                    ready.notify()
            else:
                self.close()

    def _deliver(self, queue: deque[tuple[float, bytes]], ready: threading.Condition, target: socket.socket) -> None:
        try:
            while True:
                with ready:
                    while not queue:
                        ready.wait()
                    due, data = queue.popleft()
                if not data:
                    break
                if (wait := due - time.perf_counter()) > 0:
                    time.sleep(wait)
                target.sendall(data)
        except OSError:
            pass
        finally:
            self.close()


class RoundTripProxy:
    """Forward ``127.0.0.1:<port>`` to ``target``; count round trips.

    Use as a context manager; ``port`` is where clients connect.
    """

    def __init__(self, target_host: str, target_port: int, *, delay: float = 0.0, record: bool = False) -> None:
        self.target = (target_host, target_port)
        self.delay = delay
        self.record = record
        self._recorded: list[tuple[int, bool, bytes]] = []
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self._lock = threading.Lock()
        self._links: list[_Link] = []
        self._round_trips = 0
        self._closed = False
        self._refusing = False

    @property
    def round_trips(self) -> int:
        """Round trips begun by clients since the start or the last :meth:`reset`."""
        with self._lock:
            return self._round_trips

    @property
    def recorded(self) -> list[tuple[int, bool, bytes]]:
        """With ``record``: (round trip, from the client?, bytes) for each chunk forwarded since the last :meth:`reset`.

        Every connection's chunks, in the order they arrived; the round trip
        is the count a client's chunk began or continued.
        """
        with self._lock:
            return list(self._recorded)

    def reset(self) -> None:
        with self._lock:
            self._round_trips = 0
            self._recorded.clear()

    def sever(self) -> None:
        """Cut every open connection, as a network failure would."""
        with self._lock:
            links, self._links = self._links, []
        for link in links:
            link.close()

    @contextmanager
    def outage(self) -> Iterator[None]:
        """The server gone for the block: open connections cut, new ones refused.

        What an app sees while its database restarts, minus the restart.
        """
        self._refusing = True
        self.sever()
        try:
            yield
        finally:
            self._refusing = False

    def __enter__(self) -> RoundTripProxy:
        threading.Thread(target=self._accept, daemon=True).start()
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None) -> None:
        self._closed = True
        self._listener.close()
        self.sever()

    def _observe(self, link: _Link, upstream: bool, data: bytes) -> None:
        with self._lock:
            if upstream and not link.client_spoke_last:
                self._round_trips += 1
            link.client_spoke_last = upstream
            if self.record:
                self._recorded.append((self._round_trips, upstream, data))

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            if self._refusing:
                client.close()
                continue
            try:
                server = socket.create_connection(self.target)
            except OSError:
                client.close()
                continue
            for sock in (client, server):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            link = _Link(self, client, server)
            with self._lock:
                self._links.append(link)
            link.start()
