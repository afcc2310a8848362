"""HTTP calls that ``requests`` cannot make: over a unix socket, or from a chosen source address.

The scheduler listens on 127.0.0.1; Linux lets a client connect from any other 127.0.0.0/8
address, so tests get clients at distinct addresses on one host.
"""

from __future__ import annotations

import base64
import http.client
import json
import socket
import ssl
from dataclasses import dataclass
from pathlib import Path


class UnixHTTPConnection(http.client.HTTPConnection):
    """Plain HTTP over a unix socket (what a reverse proxy on the same host does)."""

    def __init__(self, path: Path, timeout: float = 30):
        super().__init__("localhost", timeout=timeout)
        self._path = str(path)

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        sock.connect(self._path)
        self.sock = sock


@dataclass
class Answer:
    status: int
    headers: http.client.HTTPMessage
    body: bytes

    def json(self) -> dict:
        return json.loads(self.body)


def basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def call(conn: http.client.HTTPConnection, method: str, path: str, headers: dict[str, str] | None = None,
         body: str | None = None) -> Answer:
    all_headers = dict(headers or {})
    if body is not None:
        all_headers.setdefault("Content-Type", "application/x-www-form-urlencoded")
    try:
        conn.request(method, path, body=body, headers=all_headers)
        resp = conn.getresponse()
        return Answer(resp.status, resp.headers, resp.read())
    finally:
        conn.close()


def over_unix(path: Path, method: str, url_path: str, headers: dict[str, str] | None = None,
              body: str | None = None, timeout: float = 30) -> Answer:
    return call(UnixHTTPConnection(path, timeout), method, url_path, headers, body)


def over_https(port: int, ca_file: Path, method: str, url_path: str, headers: dict[str, str] | None = None,
               body: str | None = None, source: str = "127.0.0.1", timeout: float = 30) -> Answer:
    """HTTPS to the scheduler on 127.0.0.1:port from the loopback address ``source``."""
    context = ssl.create_default_context(cafile=str(ca_file))
    conn = http.client.HTTPSConnection("127.0.0.1", port, context=context, timeout=timeout,
                                       source_address=(source, 0))
    return call(conn, method, url_path, headers, body)
