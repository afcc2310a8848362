"""A real, ephemeral PostgreSQL 15 cluster for the history tests.

initdb/pg_ctl run as the ``postgres`` user (they refuse root). The cluster listens on
127.0.0.1 with TLS only (a test CA made with ``cryptography``; plain TCP is rejected by
pg_hba.conf) and scram-sha-256 passwords; the tests' own administration uses the unix socket as
``postgres``. One cluster per test session (``cluster()``), one database and two roles (owner,
DML-only scheduler) per test (``PgCluster.create_database``). fsync is off (an OS crash is not
simulated; ``pg_ctl stop -m immediate`` keeps what was written), but synchronous_commit stays on:
with it off, an immediate stop loses commits already acknowledged to the scheduler, and the
"nothing lost" test rightly fails.
"""

from __future__ import annotations

import atexit
import contextlib
import datetime as dt
import ipaddress
import os
import secrets
import shutil
import socket
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import psycopg2
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

PG_BIN_DIRS = ("/usr/lib/postgresql/15/bin",)


def pg_bin(name: str) -> str:
    """A PostgreSQL server binary from PATH or Debian's versioned directory (never skipped)."""
    found = shutil.which(name) or next((f"{d}/{name}" for d in PG_BIN_DIRS if os.access(f"{d}/{name}", os.X_OK)),
                                       None)
    assert found, f"{name} not found on PATH or in {PG_BIN_DIRS}: install postgresql-15 (see .ci/run)"
    return found


def as_postgres(*cmd: str, timeout: float = 120) -> subprocess.CompletedProcess:
    result = subprocess.run(["runuser", "-u", "postgres", "--", *cmd], capture_output=True, text=True,
                            timeout=timeout)
    assert result.returncode == 0, f"{' '.join(cmd)} failed:\n{result.stdout}\n{result.stderr}"
    return result


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _write_test_ca(directory: Path) -> tuple[Path, Path, Path]:
    """ca.crt, and server.crt/server.key for localhost and 127.0.0.1, signed by it."""
    now = dt.datetime.now(dt.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "history test CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(hours=1))
          .not_valid_after(now + dt.timedelta(days=2))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
            .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(hours=1)).not_valid_after(now + dt.timedelta(days=2))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"),
                                                        x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .sign(ca_key, hashes.SHA256()))
    paths = (directory / "ca.crt", directory / "server.crt", directory / "server.key")
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return paths


@dataclass
class Database:
    """One test database: owner (migrations) and scheduler (DML) roles, passwords in files."""

    cluster: PgCluster
    name: str
    owner: str
    owner_password_file: Path
    user: str
    password_file: Path

    def history_section(self, *, sslmode: str = "verify-full", extra: str = "") -> str:
        """A [history] section for scheduler.conf reaching this database over TLS."""
        return (f"[history]\nbackend = postgresql\nhost = localhost\nport = {self.cluster.port}\n"
                f"dbname = {self.name}\nuser = {self.user}\npassword_file = {self.password_file}\n"
                f"admin_user = {self.owner}\nadmin_password_file = {self.owner_password_file}\n"
                f"sslmode = {sslmode}\nsslrootcert = {self.cluster.ca_file}\nretry_interval = 0.5\n{extra}\n")

    def url(self, *, owner: bool = False) -> str:
        role, pw = (self.owner, self.owner_password_file) if owner else (self.user, self.password_file)
        return (f"postgresql+psycopg2://{role}:{pw.read_text().strip()}@localhost:{self.cluster.port}/{self.name}"
                f"?sslmode=verify-full&sslrootcert={self.cluster.ca_file}")

    def query(self, sql: str, *args: object) -> list[tuple]:
        """Run SQL as the superuser over the unix socket (works while the scheduler's role cannot)."""
        with self.cluster.connect(self.name) as conn, conn.cursor() as cur:
            cur.execute(sql, args or None)
            return cur.fetchall() if cur.description else []


class PgCluster:
    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="luigi-appliance-pg-"))
        self.root.chmod(0o755)
        self.data = self.root / "data"
        self.socket_dir = self.root / "sock"
        self.port = _free_port()
        self.log_file = self.root / "postgres.log"
        self.ca_file = self.root / "ca.crt"
        self._dbs = 0

    def init(self) -> None:
        tls = self.root / "tls"
        tls.mkdir()
        ca, cert, key = _write_test_ca(tls)
        shutil.copy(ca, self.ca_file)
        self.socket_dir.mkdir()
        shutil.chown(self.socket_dir, "postgres", "postgres")
        shutil.chown(self.root, "postgres", "postgres")
        for path in (tls, cert, key):
            shutil.chown(path, "postgres", "postgres")
        key.chmod(0o600)
        as_postgres(pg_bin("initdb"), "-D", str(self.data), "-U", "postgres", "--no-sync", "-E", "UTF8",
                    "--locale=C", "--auth-local=trust", "--auth-host=scram-sha-256")
        with open(self.data / "postgresql.conf", "a") as conf:
            conf.write(f"""
listen_addresses = '127.0.0.1'
port = {self.port}
unix_socket_directories = '{self.socket_dir}'
ssl = on
ssl_cert_file = '{cert}'
ssl_key_file = '{key}'
password_encryption = 'scram-sha-256'
fsync = off
full_page_writes = off
shared_buffers = 64MB
max_connections = 60
log_min_messages = warning
""")
        # TLS only over TCP: no `host` line, so a plain connection finds no matching entry.
        (self.data / "pg_hba.conf").write_text("local all postgres trust\n"
                                               "hostssl all all 127.0.0.1/32 scram-sha-256\n")

    def start(self) -> None:
        as_postgres(pg_bin("pg_ctl"), "-D", str(self.data), "-l", str(self.log_file), "-w", "-t", "60", "start")

    def stop(self, mode: str = "fast") -> None:
        as_postgres(pg_bin("pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "-t", "60", "stop")

    def running(self) -> bool:
        result = subprocess.run(["runuser", "-u", "postgres", "--", pg_bin("pg_ctl"), "-D", str(self.data), "status"],
                                capture_output=True, text=True, timeout=30)
        return result.returncode == 0

    def connect(self, dbname: str = "postgres") -> contextlib.closing:
        """A superuser connection over the unix socket, autocommit (``with`` closes it; psycopg2's
        own ``with connection`` would open a transaction, where CREATE DATABASE is refused)."""
        conn = psycopg2.connect(host=str(self.socket_dir), port=self.port, user="postgres", dbname=dbname)
        conn.autocommit = True
        return contextlib.closing(conn)

    def create_database(self, tmp: Path) -> Database:
        """A database owned by a new owner role, plus a login role for the scheduler (no rights yet)."""
        self._dbs += 1
        name = f"hist{self._dbs}"
        db = Database(self, name, f"{name}_owner", tmp / f"{name}-owner.password", f"{name}_sched",
                      tmp / f"{name}-sched.password")
        with self.connect() as conn, conn.cursor() as cur:
            for role, path in ((db.owner, db.owner_password_file), (db.user, db.password_file)):
                password = secrets.token_urlsafe(16)
                path.write_text(password + "\n")
                path.chmod(0o600)
                cur.execute(f"CREATE ROLE {role} LOGIN PASSWORD %s", (password,))
            cur.execute(f"CREATE DATABASE {name} OWNER {db.owner}")
            cur.execute(f"REVOKE ALL ON DATABASE {name} FROM PUBLIC")
            cur.execute(f"GRANT CONNECT ON DATABASE {name} TO {db.user}")
        return db

    def destroy(self) -> None:
        if self.running():
            self.stop("immediate")
        shutil.rmtree(self.root, ignore_errors=True)


_CLUSTER: PgCluster | None = None


def cluster() -> PgCluster:
    """The session's cluster, started on first use and removed at exit."""
    global _CLUSTER
    if _CLUSTER is None:
        _CLUSTER = PgCluster()
        atexit.register(_CLUSTER.destroy)
        _CLUSTER.init()
        _CLUSTER.start()
    elif not _CLUSTER.running():
        _CLUSTER.start()  # a test stopped it and failed before restarting it
    return _CLUSTER
