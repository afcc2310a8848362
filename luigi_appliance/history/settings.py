"""The [history] section: validated settings and the checks that span several keys."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from luigi_appliance.hosts import is_loopback_host
from luigi_appliance.settings.declare import key, secret
from luigi_appliance.settings.loader import SchemaLoader, section
from luigi_appliance.settings.parsers import choice, duration_range, int_range, parse_bool, parse_path, size_range

BACKENDS = ("none", "sqlite", "postgresql")
SSLMODES = ("disable", "require", "verify-ca", "verify-full")
# What happens to a new event when the spool file is at spool_limit (docs/history.md).
SPOOL_FULL_POLICIES = ("drop-new",)


def parse_db_host(value: str) -> str:
    """A host name, an IP address, or an absolute directory holding PostgreSQL's unix socket."""
    if value.startswith("/"):
        return value
    if not re.match(r"^[A-Za-z0-9.:-]+$", value):
        raise ValueError(f"expected a host name, an IP address or a socket directory, got {value!r}")
    return value


def parse_identifier(value: str) -> str:
    """A PostgreSQL role or database name (kept simple: it is also interpolated into GRANTs)."""
    if not re.match(r"^[A-Za-z_][A-Za-z0-9_$-]{0,62}$", value):
        raise ValueError(f"expected a name of letters, digits, _, $ or - (at most 63), got {value!r}")
    return value


def default_sslmode(host: str) -> str:
    """verify-full for a remote server; disable for a unix socket or loopback address."""

    return "disable" if host.startswith("/") or is_loopback_host(host) else "verify-full"


@dataclass(frozen=True)
class HistorySettings:
    """Effective [history] settings. Secrets are bytes (from enc:) or a file path read on use."""

    backend: str = key(choice(*BACKENDS), "none", "none, postgresql or sqlite")
    sqlite_path: Path = key(parse_path, Path("/var/lib/luigi-appliance/history.db"),
                            "the SQLite file when backend = sqlite")
    host: str = key(parse_db_host, "localhost", "the PostgreSQL server: host name, IP address or socket directory")
    port: int = key(int_range(1, 65535), 5432, "its TCP port")
    dbname: str = key(parse_identifier, "luigi", "the database")
    user: str = key(parse_identifier, "luigi_scheduler", "the role the scheduler connects as")
    password: bytes | None = secret("the password of user")
    password_file: Path | None = None
    admin_user: str | None = key(parse_identifier, None, "the owner of the history tables, for db upgrade|current")
    admin_password: bytes | None = secret("the password of admin_user")
    admin_password_file: Path | None = None
    # Unset (None): default_sslmode(host), resolved in __post_init__.
    sslmode: str = key(choice(*SSLMODES), None,
                       "disable, require, verify-ca or verify-full (unset: verify-full, disable for a local host)")
    sslrootcert: Path | None = key(parse_path, None, "PEM CA certificate(s) of the database server",
                                   must_exist=True)
    allow_insecure: bool = key(parse_bool, False, "accept sslmode below verify-full for a non-local host")
    pool_size: int = key(int_range(1, 32), 2, "connections serving the history pages")
    connect_timeout: float = key(duration_range(1, 300), 5.0, "how long a connection attempt may take")
    statement_timeout: float = key(duration_range(1, 3600), 30.0, "longest a statement may run")
    queue_size: int = key(int_range(1000, 10_000_000), 100_000, "events held in memory for the writer")
    batch_size: int = key(int_range(1, 10_000), 500, "most events written in one transaction")
    flush_interval: float = 0.2
    retry_interval: float = key(duration_range(0.1, 300), 5.0, "how often an unavailable database is tried again")
    spool_limit: int = key(size_range(1024 * 1024, 1024**4), 1024**3, "largest size of the spool file, in bytes")
    spool_full: str = key(choice(*SPOOL_FULL_POLICIES), "drop-new", "what happens to new events when the spool is full")
    page_size: int = key(int_range(10, 1000), 100, "rows per history page")

    def __post_init__(self) -> None:
        if self.sslmode is None:
            object.__setattr__(self, "sslmode", default_sslmode(self.host))

    @property
    def enabled(self) -> bool:
        return self.backend != "none"

    @property
    def is_local(self) -> bool:
        """A unix socket directory or a loopback address: TLS is not required by default."""

        return self.host.startswith("/") or is_loopback_host(self.host)

    @property
    def is_insecure(self) -> bool:
        """True when a non-local server is reached without verifying its certificate and name."""
        return self.backend == "postgresql" and not self.is_local and self.sslmode != "verify-full"


def check_database_tls(loader: SchemaLoader, name: str) -> None:
    """Section ``name``'s PostgreSQL connection ([history], [ha]): TLS to a remote database verifies
    the server unless the admin explicitly accepts less."""
    v = loader.values
    doc = loader.doc
    host = v.get((name, "host")) or "localhost"
    sslmode = v.get((name, "sslmode")) or default_sslmode(host)
    local = host.startswith("/") or is_loopback_host(host)
    where = doc.get(name, "sslmode") or doc.get(name, "host") or doc.get(name, "backend")
    if not local and sslmode != "verify-full" and not v.get((name, "allow_insecure")):
        loader.issue(where, name, "sslmode",
                     f"sslmode = {sslmode} does not verify that {host} is the database server (verify-full "
                     "does); refused for a non-local host unless allow_insecure = true")
    if sslmode.startswith("verify") and v.get((name, "sslrootcert")) is None:
        loader.issue(where, name, "sslrootcert",
                     f"sslmode = {sslmode} needs sslrootcert, the CA certificate(s) that signed the database "
                     "server's certificate, e.g. sslrootcert = /etc/luigi-appliance/tls/db-ca.pem")


def _check_history(loader: SchemaLoader) -> None:
    """The database's TLS rule, and an admin password only with the admin_user it belongs to."""
    v = loader.values
    doc = loader.doc
    if v.get(("history", "backend")) != "postgresql":
        return
    check_database_tls(loader, "history")
    has_admin_pw = v.get(("history", "admin_password")) is not None or v.get(("history", "admin_password_file"))
    if has_admin_pw and not v.get(("history", "admin_user")):
        loader.issue(doc.get("history", "admin_password_file") or doc.get("history", "admin_password"),
                     "history", "admin_user", "an admin password is given but no admin_user (the database owner)")


HISTORY = section("history", HistorySettings, _check_history)
