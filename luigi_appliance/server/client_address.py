"""The client's address, as the throttle, the lockout, the log and the audit trail see it.

Behind a reverse proxy every request comes from the proxy: on the documented setup (nginx on
the unix-socket listener) Tornado reports 0.0.0.0 for all of them. With ``[server]
trusted_proxies``, a request whose peer is a trusted proxy (an address in its ranges, or the
unix socket with ``unix``) gets the address the proxy forwarded: the right-most hop of
``X-Forwarded-For`` that is not itself a trusted proxy (everything left of it was written by
the client and proves nothing), else ``X-Real-IP``. Forwarded headers from any other peer are
ignored.

When no client address is known, the source is a label that is no IP address: ``unix`` (the
unix socket, no usable forwarded address) or ``proxy:<address>`` (a trusted proxy that sent
none). The throttle then counts the user name only (auth/basic.py ``client_address``), so one
client's bad guesses cannot lock out everybody behind the same socket.
"""

from __future__ import annotations

import ipaddress
import socket

from tornado.httputil import HTTPHeaders, HTTPServerRequest

from luigi_appliance.server.settings import TrustedProxies

UNIX_SOURCE = "unix"
# Distinct address strings remembered (parsing one costs several microseconds, per request).
MAX_REMEMBERED = 10_000


def _is_unix(request: HTTPServerRequest) -> bool:
    context = getattr(request.connection, "context", None)
    return getattr(context, "address_family", None) == socket.AF_UNIX


class ClientAddresses:
    """Resolves each request's client address under ``proxies``."""

    def __init__(self, proxies: TrustedProxies | None = None):
        self.proxies = proxies or TrustedProxies()
        self._hops: dict[str, tuple[str | None, bool]] = {}

    def source(self, request: HTTPServerRequest) -> str:
        """The client's IP address, or a label (``unix``, ``proxy:<address>``) when unknown."""
        if _is_unix(request):
            return self._through_proxy(request.headers, UNIX_SOURCE) if self.proxies.unix else UNIX_SOURCE
        remote = request.remote_ip or ""
        if not self.proxies.networks:
            return remote  # nothing to look up: the common case
        address, trusted = self._hop(remote)
        if address is None or not trusted:
            return remote
        return self._through_proxy(request.headers, f"proxy:{address}")

    def _hop(self, text: str) -> tuple[str | None, bool]:
        """(the address in ``text``, normalised, or None if it is none; whether it is a trusted proxy)."""
        known = self._hops.get(text)
        if known is None:
            try:
                address = ipaddress.ip_address(text.strip())
            except ValueError:
                known = (None, False)
            else:
                # A dual-stack listener sees IPv4 clients as ::ffff:a.b.c.d; ranges are written as IPv4.
                address = getattr(address, "ipv4_mapped", None) or address
                known = (str(address), self.proxies.trusts(address))
            if len(self._hops) >= MAX_REMEMBERED:
                self._hops.clear()
            self._hops[text] = known
        return known

    def _through_proxy(self, headers: HTTPHeaders, unknown: str) -> str:
        """The address a trusted proxy forwarded, or ``unknown`` when it forwarded none."""
        hops = [hop for value in headers.get_list("X-Forwarded-For") for hop in value.split(",")]
        if hops:
            for hop in reversed(hops):
                address, trusted = self._hop(hop)
                if address is None:
                    return unknown  # garbage where the client's address should be: trust nothing
                if not trusted:
                    return address
            return self._hop(hops[0])[0] or unknown  # all trusted proxies: the request began on one
        real_ip = headers.get("X-Real-IP")
        return (self._hop(real_ip)[0] if real_ip else None) or unknown
