"""A TCP proxy that counts the connections made to it, for tests that prove a client did not retry.

Each connection is forwarded to the real server, so the client sees the real server's answer
(its certificate, its 401); the count says how many times the client tried.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager


class CountingProxy:
    def __init__(self, upstream_port: int):
        self._upstream = ("127.0.0.1", upstream_port)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self._peers: list[tuple[str, int]] = []  # in the order accepted (the kernel's: first come)
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._accept, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _accept(self) -> None:
        while True:
            try:
                client, peer = self._listener.accept()
            except OSError:
                return  # closed
            with self._lock:
                self._peers.append(peer)
            upstream = socket.create_connection(self._upstream)
            for source, target in ((client, upstream), (upstream, client)):
                threading.Thread(target=_pump, args=(source, target), daemon=True).start()

    def connections(self, deadline: float = 30) -> int:
        """How many connections were made before now: a last one of our own is accepted after
        all of them (the backlog is first come, first served), so none still waiting is missed."""
        with socket.create_connection(("127.0.0.1", self.port)) as marker:
            own = marker.getsockname()[:2]
            end = time.monotonic() + deadline
            while time.monotonic() < end:
                with self._lock:
                    if own in self._peers:
                        return self._peers.index(own)
                time.sleep(0.01)
        raise AssertionError("the proxy did not accept its own connection")

    def close(self) -> None:
        self._listener.close()


def _pump(source: socket.socket, target: socket.socket) -> None:
    try:
        while data := source.recv(65536):
            target.sendall(data)
    except OSError:
        pass
    finally:
        for sock in (source, target):
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


@contextmanager
def counting_proxy(upstream_port: int) -> Iterator[CountingProxy]:
    """A started proxy to 127.0.0.1:``upstream_port``, closed on the way out."""
    proxy = CountingProxy(upstream_port)
    proxy.start()
    try:
        yield proxy
    finally:
        proxy.close()
