"""The [ha] section: an active/standby pair coordinated through PostgreSQL (docs/ha.md)."""

from __future__ import annotations

import re
import socket
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from luigi_appliance.history.settings import (
    SSLMODES,
    check_database_tls,
    default_sslmode,
    parse_db_host,
    parse_identifier,
)
from luigi_appliance.hosts import is_loopback_host
from luigi_appliance.settings.declare import key, secret
from luigi_appliance.settings.loader import SchemaLoader, section
from luigi_appliance.settings.parsers import choice, duration_range, int_range, parse_bool, parse_path

BACKENDS = ("none", "postgresql")
_NODE_NAME = re.compile(r"^[A-Za-z0-9._-]{1,63}$")
# Lower case only, so the unquoted name and the NOTIFY channel f"{schema}_journal" (at most 63
# bytes) are the same string everywhere.
_SCHEMA = re.compile(r"^[a-z_][a-z0-9_]{0,54}$")


def parse_node_name(value: str) -> str:
    """The name the lease row shows for this node."""
    if not _NODE_NAME.match(value):
        raise ValueError(f"expected 1 to 63 letters, digits, '.', '_' or '-', got {value!r}")
    return value


def parse_schema(value: str) -> str:
    """A lower-case PostgreSQL schema name (it is interpolated into the statements and the channel)."""
    if not _SCHEMA.match(value):
        raise ValueError(f"expected a schema name of lower-case letters, digits and _ (at most 55, "
                         f"not starting with a digit), got {value!r}")
    return value


def parse_advertise_url(value: str) -> str:
    """http(s)://HOST[:PORT][/PATH]: the URL workers use to reach this node."""
    parts = urlsplit(value)
    try:
        port_ok = parts.port is None or parts.port > 0
    except ValueError:
        port_ok = False
    if (parts.scheme not in ("http", "https") or not parts.hostname or not port_ok or parts.username
            or parts.password or parts.query or parts.fragment):
        raise ValueError(f"expected the URL workers reach this node at, as https://HOST:PORT/, got {value!r}")
    return value


def short_hostname() -> str:
    """The host name up to its first dot: node_name's default."""
    return socket.gethostname().split(".")[0]


@dataclass(frozen=True)
class HaSettings:
    """Effective [ha] settings. The connection keys mean what they mean in [history]."""

    backend: str = key(choice(*BACKENDS), "none", "none or postgresql (an active/standby pair)")
    host: str = key(parse_db_host, "localhost", "the PostgreSQL server: host name, IP address or socket directory")
    port: int = key(int_range(1, 65535), 5432, "its TCP port")
    dbname: str = key(parse_identifier, "luigi", "the database")
    user: str = key(parse_identifier, "luigi_scheduler", "the role the scheduler connects as")
    password: bytes | None = secret("the password of user")
    password_file: Path | None = None
    # Unset (None): default_sslmode(host), resolved in __post_init__.
    sslmode: str = key(choice(*SSLMODES), None,
                       "disable, require, verify-ca or verify-full (unset: verify-full, disable for a local host)")
    sslrootcert: Path | None = key(parse_path, None, "PEM CA certificate(s) of the database server",
                                   must_exist=True)
    allow_insecure: bool = key(parse_bool, False, "accept sslmode below verify-full for a non-local host")
    connect_timeout: float = key(duration_range(1, 300), 5.0, "how long a connection attempt may take")
    schema: str = key(parse_schema, "luigi_ha", "the schema of the lease, journal and snapshot tables")
    # Unset (None): short_hostname(), resolved in __post_init__.
    node_name: str = key(parse_node_name, None, "this node's name in the lease (unset: the short host name)")
    advertise_url: str | None = key(parse_advertise_url, None,
                                    "the URL workers reach this node at (required with postgresql)")
    lease_ttl: float = key(duration_range(1, 120), 5.0, "how long a lease lasts without renewal")
    renew_interval: float | None = key(duration_range(0.1, 60), None,
                                       "how often the lease is renewed (unset: lease_ttl / 3)")
    poll_interval: float = key(duration_range(0.05, 30), 1.0, "how often the standby reads the journal "
                               "without a notification")
    max_batch: int = key(int_range(1, 10_000), 200, "most journal records written in one commit")
    compact_interval: float = key(duration_range(10, 86400), 60.0,
                                  "how often a signed snapshot replaces the journal before it")

    def __post_init__(self) -> None:
        if self.sslmode is None:
            object.__setattr__(self, "sslmode", default_sslmode(self.host))
        if self.node_name is None:
            object.__setattr__(self, "node_name", short_hostname())

    @property
    def enabled(self) -> bool:
        return self.backend != "none"

    @property
    def renew_every(self) -> float:
        """Seconds between lease renewals (and, on the standby, lease checks)."""
        return self.renew_interval if self.renew_interval is not None else self.lease_ttl / 3

    @property
    def is_local(self) -> bool:
        """A unix socket directory or a loopback address: TLS is not required by default."""
        return self.host.startswith("/") or is_loopback_host(self.host)

    @property
    def is_insecure(self) -> bool:
        """True when a non-local server is reached without verifying its certificate and name."""
        return self.backend == "postgresql" and not self.is_local and self.sslmode != "verify-full"


def _check_ha(loader: SchemaLoader) -> None:
    """What a pair needs: this node's URL, a state key both nodes share, renewals well within the
    lease, a valid node name, and [history]'s TLS rules for the database."""
    v = loader.values
    doc = loader.doc
    if v.get(("ha", "backend")) != "postgresql":
        return
    backend = doc.get("ha", "backend")
    if v.get(("ha", "advertise_url")) is None and doc.get("ha", "advertise_url") is None:
        loader.issue(backend, "ha", "advertise_url",
                     "backend = postgresql needs advertise_url, the URL workers reach this node at "
                     "(the standby names it to them), e.g. advertise_url = https://sched1.example.com:8082/")
    # A key given but invalid was reported already by [state]'s own loading.
    if not any(v.get(("state", k)) is not None or doc.get("state", k) is not None
               for k in ("hmac_key", "hmac_key_file")):
        loader.issue(backend, "ha", "backend",
                     "backend = postgresql needs [state] hmac_key_file = PATH (or hmac_key = enc:...), the same "
                     "key on both nodes: each node verifies the snapshots the other one signed")
    ttl, renew = v.get(("ha", "lease_ttl")), v.get(("ha", "renew_interval"))
    if ttl is not None and renew is not None and renew > ttl / 2:
        loader.issue(doc.get("ha", "renew_interval"), "ha", "renew_interval",
                     f"renew_interval = {renew:g}s is more than half of lease_ttl = {ttl:g}s: one late renewal "
                     "would lose the lease; use at most lease_ttl / 2 (unset: lease_ttl / 3)")
    if doc.get("ha", "node_name") is None and not _NODE_NAME.match(short_hostname()):
        loader.issue(backend, "ha", "node_name",
                     f"the short host name {short_hostname()!r} is not a valid node name (1 to 63 letters, "
                     "digits, '.', '_' or '-'); set node_name")
    check_database_tls(loader, "ha")


HA = section("ha", HaSettings, _check_ha)
