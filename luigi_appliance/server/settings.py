"""The [server] and [tls] sections: where and how the scheduler listens."""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from pathlib import Path

from luigi_appliance.hosts import is_loopback_host
from luigi_appliance.secret_values import secret_file_problem
from luigi_appliance.settings.declare import key
from luigi_appliance.settings.loader import SchemaLoader, section
from luigi_appliance.settings.parsers import choice, int_range, parse_bool, parse_path, split_list

DEFAULT_PORT = 8082


@dataclass(frozen=True)
class ListenAddress:
    """Where the scheduler listens: a TCP host and port, or a unix socket path."""

    host: str | None = None
    port: int | None = None
    unix_path: Path | None = None

    def is_local(self) -> bool:
        """True for a unix socket or a loopback address (where plain HTTP may be allowed)."""
        return self.unix_path is not None or is_loopback_host(self.host or "")

    def __str__(self) -> str:
        if self.unix_path is not None:
            return f"unix:{self.unix_path}"
        host = f"[{self.host}]" if self.host and ":" in self.host else self.host
        return f"{host}:{self.port}"


def parse_listen(value: str) -> ListenAddress:
    """``HOST:PORT``, ``[IPV6]:PORT`` or ``unix:/absolute/path``."""
    if value.startswith("unix:"):
        return ListenAddress(unix_path=parse_path(value[len("unix:"):]))
    m = re.match(r"^(?:\[([0-9a-fA-F:.]+)\]|([A-Za-z0-9.-]+)):(\d{1,5})$", value)
    if not m:
        raise ValueError(f"expected HOST:PORT, [IPV6]:PORT or unix:/path, got {value!r}")
    port = int(m.group(3))
    if not 1 <= port <= 65535:
        raise ValueError(f"expected a port between 1 and 65535, got {port}")
    return ListenAddress(host=m.group(1) or m.group(2), port=port)


IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True)
class TrustedProxies:
    """Reverse proxies whose forwarded client address is believed (server/client_address.py):
    address ranges, and ``unix`` for whatever connects to the unix-socket listener."""

    networks: tuple[IPNetwork, ...] = ()
    unix: bool = False

    def trusts(self, address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
        return any(address in network for network in self.networks)

    def __str__(self) -> str:
        return ", ".join([*(["unix"] if self.unix else []), *(str(n) for n in self.networks)])


def parse_trusted_proxies(value: str) -> TrustedProxies:
    """``unix`` and/or IP addresses and CIDR ranges, separated by commas or blanks."""
    networks: list[IPNetwork] = []
    unix = False
    for item in split_list(value):
        if item == "unix":
            unix = True
            continue
        try:
            networks.append(ipaddress.ip_network(item))
        except ValueError as exc:
            raise ValueError(f"expected unix, an IP address or an address range such as 10.0.0.0/8, "
                             f"got {item!r} ({exc})") from None
    return TrustedProxies(tuple(networks), unix)


def parse_banner(value: str) -> str:
    """Up to 40 printable characters (shown as text in every page's header)."""
    text = value.strip()
    if not text or len(text) > 40 or not text.isprintable():
        raise ValueError(f"expected 1 to 40 printable characters, got {value!r}")
    return text


def parse_color(value: str) -> str:
    """A CSS colour: #rgb, #rrggbb or a colour name such as darkred (nothing else reaches the CSS)."""
    if not re.fullmatch(r"#[0-9a-fA-F]{3}|#[0-9a-fA-F]{6}|[a-zA-Z]{3,20}", value):
        raise ValueError(f"expected #rgb, #rrggbb or a colour name, got {value!r}")
    return value.lower()


@dataclass(frozen=True)
class ServerSettings:
    listen: ListenAddress = key(parse_listen, ListenAddress("127.0.0.1", DEFAULT_PORT),
                                "where connections are accepted: HOST:PORT, [IPV6]:PORT or unix:/path")
    insecure_http: bool = key(parse_bool, False, "plain HTTP instead of HTTPS (loopback or unix socket only)")
    max_body_bytes: int = key(int_range(1024, 256 * 1024 * 1024), 2 * 1024 * 1024,
                              "largest request body accepted, in bytes")
    hsts_max_age: int = key(int_range(0, 2 * 365 * 86400), 365 * 86400,
                            "max-age of the Strict-Transport-Security header, in seconds")
    trusted_proxies: TrustedProxies = key(parse_trusted_proxies, TrustedProxies(),
                                          "reverse proxies whose forwarded client address is believed")
    banner: str | None = key(parse_banner, None, "environment name shown in every page's header, e.g. PRODUCTION")
    banner_color: str = key(parse_color, "#c9302c", "background colour of the banner: #rgb, #rrggbb or a name")


@dataclass(frozen=True)
class TLSSettings:
    cert_file: Path | None = key(parse_path, None, "PEM certificate of this server (unset: self-signed)",
                                 must_exist=True)
    key_file: Path | None = key(parse_path, None, "PEM private key for cert_file", must_exist=True)
    ca_file: Path | None = key(parse_path, None, "PEM intermediate chain sent after the certificate",
                               must_exist=True)
    min_version: str = key(choice("1.2", "1.3"), "1.2", "lowest TLS version accepted: 1.2 or 1.3")


def _check_server(loader: SchemaLoader) -> None:
    v = loader.values
    doc = loader.doc
    listen: ListenAddress | None = v.get(("server", "listen"))
    if v.get(("server", "insecure_http")) and listen is not None and not listen.is_local():
        loader.issue(doc.get("server", "insecure_http") or doc.get("server", "listen"), "server", "insecure_http",
                     f"plain HTTP is only allowed on a loopback address or a unix socket, not on {listen}")


def _check_tls(loader: SchemaLoader) -> None:
    v = loader.values
    doc = loader.doc
    cert, key_file = v.get(("tls", "cert_file")), v.get(("tls", "key_file"))
    if (cert is None) != (key_file is None):
        present = doc.get("tls", "cert_file") or doc.get("tls", "key_file")
        loader.issue(present, "tls", "cert_file" if cert is None else "key_file",
                     "cert_file and key_file must be given together (or neither, for a self-signed certificate)")
    if key_file is not None and loader.check_files:
        problem = secret_file_problem(key_file)
        if problem and key_file.exists():
            loader.issue(doc.get("tls", "key_file"), "tls", "key_file", problem)


SERVER = section("server", ServerSettings, _check_server)
TLS = section("tls", TLSSettings, _check_tls)
