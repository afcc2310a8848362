"""HTTPS to an issuer without blocking the IOLoop: tornado's AsyncHTTPClient, TLS verified
(chain and host name) with the issuer's CA file or the system's trust store.

Every failure to get an answer is one ``TokenRefused(ISSUER_UNAVAILABLE)`` whose message names
the URL and what went wrong (TLS, refused connection, timeout, HTTP status, not JSON), for the
log and for ``oidc test``; never a secret (forms and their answers are not in it).
"""

from __future__ import annotations

import base64
import json
import ssl
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

from tornado.httpclient import AsyncHTTPClient, HTTPClientError, HTTPRequest

from luigi_appliance.auth.oidc import Refusal, TokenRefused

MAX_ANSWER = 1024 * 1024  # a discovery document or JWKS is a few KB; a token answer too


def tls_context(ca_file: Path | None) -> ssl.SSLContext:
    """Verify-full: the chain to ``ca_file`` (or the system's CAs) and the host name."""
    context = ssl.create_default_context(cafile=str(ca_file) if ca_file else None)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


def unavailable(url: str, why: str) -> TokenRefused:
    return TokenRefused(Refusal.ISSUER_UNAVAILABLE, f"cannot use {url}: {why}")


def _why(exc: BaseException) -> str:
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"TLS certificate not trusted ({exc.verify_message}); check ca_file"
    if isinstance(exc, ssl.SSLError):
        return f"TLS failed ({exc.reason or exc})"
    if isinstance(exc, HTTPClientError) and exc.code == 599:
        return "timed out" if "timeout" in str(exc).lower() else str(exc)
    if isinstance(exc, OSError):
        return exc.strerror or str(exc)
    return str(exc)


async def request_json(url: str, context: ssl.SSLContext, timeout: float, *,
                       form: Mapping[str, str] | None = None,
                       auth: tuple[str, str] | None = None) -> tuple[int, Any]:
    """GET ``url`` (or POST ``form``); the status and the JSON answer. A 4xx answer with a JSON
    body is returned (an OAuth error); anything else but 200 raises ISSUER_UNAVAILABLE."""
    headers = {"Accept": "application/json"}
    body = None
    if form is not None:
        headers["Content-Type"] = "application/x-www-form-urlencoded"
        body = urlencode(dict(form))
    if auth is not None:
        # RFC 6749 2.3.1: the id and the secret are form-encoded before Basic's base64.
        pair = f"{quote(auth[0], safe='')}:{quote(auth[1], safe='')}".encode()
        headers["Authorization"] = "Basic " + base64.b64encode(pair).decode("ascii")
    request = HTTPRequest(url, method="POST" if form is not None else "GET", headers=headers, body=body,
                          connect_timeout=timeout, request_timeout=timeout,
                          ssl_options=context, follow_redirects=False, validate_cert=True)
    # A client of its own bounds what an issuer can make the scheduler buffer (the shared one
    # accepts 100 MB, and its settings are anybody's who creates it first).
    client = AsyncHTTPClient(force_instance=True, max_body_size=MAX_ANSWER, max_header_size=64 * 1024)
    try:
        response = await client.fetch(request, raise_error=False)
    except (OSError, HTTPClientError) as exc:
        raise unavailable(url, _why(exc)) from None
    finally:
        client.close()
    if response.code == 599 and response.error is not None:
        raise unavailable(url, _why(response.error))
    try:
        document = json.loads(response.body or b"")
    except ValueError:
        document = None
    if response.code == 200 and document is not None:
        return 200, document
    if 400 <= response.code < 500 and isinstance(document, dict):
        return response.code, document
    raise unavailable(url, f"HTTP {response.code}" if response.code != 200 else "the answer is not JSON")
