"""What a host name or address is, for rules that depend on it (plain HTTP or weaker database
TLS allowed only on this machine). Imports nothing from the project, so settings of every
domain can use it."""

from __future__ import annotations

import ipaddress


def is_loopback_host(host: str) -> bool:
    """``localhost`` or a loopback IP address (127.0.0.0/8, ::1)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
