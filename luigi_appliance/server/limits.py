"""Request body limits answered with 413 before any handler (or the guard) runs.

Tornado's own max_body_size answers an oversized request with a bare 400 and no headers. This
delegate sits between the HTTP server and the application: it looks at Content-Length as soon as
the headers arrive, answers 413 itself and discards the body without buffering it. Chunked
request bodies are refused with 411 (no client of ours sends them), so the size is always known
up front.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from tornado import httputil

# Bodies up to this size are read and thrown away so that the client, still sending, gets to read
# our 413 instead of a connection reset; anything larger is answered and the connection closed.
DRAIN_LIMIT = 64 * 1024 * 1024


class _Rejecting(httputil.HTTPMessageDelegate):
    """Discards the body, then answers. Tornado hangs up on a request answered before its body
    was read, and a client still sending would see a reset instead of our status."""

    def __init__(self, respond: Callable[[], None]):
        self._respond = respond

    def data_received(self, chunk: bytes) -> None:
        return None

    def finish(self) -> None:
        self._respond()


class _Limited(httputil.HTTPMessageDelegate):
    def __init__(self, outer: BodyLimit, server_conn: object, request_conn: httputil.HTTPConnection):
        self._outer = outer
        self._server_conn = server_conn
        self._conn = request_conn
        self._inner: httputil.HTTPMessageDelegate | None = None

    def headers_received(self, start_line: Any, headers: httputil.HTTPHeaders) -> Any:
        status = self._outer.check(headers)
        if status is None:
            self._inner = self._outer.app.start_request(self._server_conn, self._conn)
            return self._inner.headers_received(start_line, headers)
        code, reason = status
        body = json.dumps({"error": code, "reason": reason}).encode()
        out = httputil.HTTPHeaders({"Content-Type": "application/json", "Content-Length": str(len(body)),
                                    "Connection": "close"})
        for name, value in self._outer.headers.items():
            out[name] = value
        length = _content_length(headers)
        chunked = "chunked" in headers.get("Transfer-Encoding", "").lower()
        if chunked or (length is not None and length <= DRAIN_LIMIT):
            # A chunked body is drained too (Tornado stops reading past DRAIN_LIMIT): answering
            # while the client still sends its chunks would make it see a reset, not our 411.
            self._conn.set_max_body_size(DRAIN_LIMIT if chunked else length)  # type: ignore[attr-defined]

            def respond() -> None:
                self._conn.write_headers(httputil.ResponseStartLine("HTTP/1.1", code, reason), out, body)
                self._conn.finish()

            self._inner = _Rejecting(respond)
        else:
            # Too big to drain: answer and hang up without reading it.
            self._inner = _Rejecting(lambda: None)
            stream = self._conn.detach()  # type: ignore[attr-defined]
            lines = [f"HTTP/1.1 {code} {reason}"] + [f"{k}: {v}" for k, v in out.get_all()]
            stream.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body).add_done_callback(
                lambda _: stream.close())
        return None

    def data_received(self, chunk: bytes) -> Any:
        assert self._inner is not None
        return self._inner.data_received(chunk)

    def finish(self) -> None:
        assert self._inner is not None
        self._inner.finish()

    def on_connection_close(self) -> None:
        if self._inner is not None:
            self._inner.on_connection_close()


def _content_length(headers: httputil.HTTPHeaders) -> int | None:
    try:
        return int(headers.get("Content-Length", ""))
    except ValueError:
        return None


class BodyLimit(httputil.HTTPServerConnectionDelegate):
    """Wraps an application (itself a connection delegate) with a request body limit."""

    def __init__(self, app: httputil.HTTPServerConnectionDelegate, limit: int, headers: dict[str, str]):
        self.app = app
        self.limit = limit
        self.headers = headers

    def check(self, headers: httputil.HTTPHeaders) -> tuple[int, str] | None:
        if "Transfer-Encoding" in headers:
            return 411, "Length Required"
        length = _content_length(headers)
        if length is not None and length > self.limit:
            return 413, "Payload Too Large"
        return None

    def start_request(self, server_conn: object, request_conn: httputil.HTTPConnection) -> httputil.HTTPMessageDelegate:
        return _Limited(self, server_conn, request_conn)

    def on_close(self, server_conn: object) -> None:
        self.app.on_close(server_conn)
