"""The [history] section: validated settings and the checks that span several keys."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from luigi_appliance.hosts import is_loopback_host

BACKENDS = ("none", "sqlite", "postgresql")
SSLMODES = ("disable", "require", "verify-ca", "verify-full")
# What happens to a new event when the spool file is at spool_limit (docs/history.md).
SPOOL_FULL_POLICIES = ("drop-new",)

_SIZE = re.compile(r"^(\d+)\s*([kmg]i?b?|b)?$")
_SIZE_FACTORS = {None: 1, "b": 1, "k": 1024, "m": 1024**2, "g": 1024**3}


def parse_size(value: str) -> int:
    """Bytes from ``1048576``, ``512k``, ``64M``, ``2G`` (binary multiples; ``MiB``/``MB`` alike)."""
    m = _SIZE.match(value.strip().lower())
    if not m:
        raise ValueError(f"expected a size such as 1048576, 512k, 64M or 2G, got {value!r}")
    unit = m.group(2)[0] if m.group(2) else None
    return int(m.group(1)) * _SIZE_FACTORS[unit]


def size_range(lo: int, hi: int) -> Callable[[str], int]:
    def parse(value: str) -> int:
        size = parse_size(value)
        if not lo <= size <= hi:
            raise ValueError(f"expected a size between {lo} and {hi} bytes, got {size}")
        return size
    return parse


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


@dataclass(frozen=True)
class HistorySettings:
    """Effective [history] settings. Secrets are bytes (from enc:) or a file path read on use."""

    backend: str = "none"
    sqlite_path: Path = Path("/var/lib/luigi-appliance/history.db")
    host: str = "localhost"
    port: int = 5432
    dbname: str = "luigi"
    user: str = "luigi_scheduler"
    password: bytes | None = field(default=None, repr=False)
    password_file: Path | None = None
    admin_user: str | None = None
    admin_password: bytes | None = field(default=None, repr=False)
    admin_password_file: Path | None = None
    sslmode: str = "verify-full"
    sslrootcert: Path | None = None
    allow_insecure: bool = False
    pool_size: int = 2
    connect_timeout: float = 5.0
    statement_timeout: float = 30.0
    queue_size: int = 100_000
    batch_size: int = 500
    flush_interval: float = 0.2
    retry_interval: float = 5.0
    spool_limit: int = 1024**3
    spool_full: str = "drop-new"
    page_size: int = 100

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


def default_sslmode(host: str) -> str:
    """verify-full for a remote server; disable for a unix socket or loopback address."""

    return "disable" if host.startswith("/") or is_loopback_host(host) else "verify-full"
