"""A real OpenLDAP directory for the tests: two ``slapd`` processes with the same data.

Each listens on ldap:// (for StartTLS) and ldaps:// on loopback with a certificate from a test
CA made here with ``cryptography``; the memberof overlay maintains ``memberOf`` as on FreeIPA and
AD. The tree has people, service accounts, nested groups (with a cycle), a posixGroup for
``memberUid`` searches and an AD-style entry with ``sAMAccountName``.
"""

from __future__ import annotations

import datetime
import ipaddress
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import ldap3
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from conftest import free_port

SLAPD = shutil.which("slapd") or "/usr/sbin/slapd"
SUFFIX = "dc=example,dc=com"
ROOT_DN = f"cn=admin,{SUFFIX}"
ROOT_PW = "root-secret-for-tests"
BIND_DN = f"uid=luigi-appliance,ou=services,{SUFFIX}"
BIND_PW = "bind-Secret-9f2"

# name -> (password, groups it is a direct member of)
PEOPLE: dict[str, tuple[str, list[str]]] = {
    "alice": ("alice-Pw-1", ["luigi-admins"]),
    "olga": ("olga-Pw-2", ["luigi-operators"]),
    "victor": ("victor-Pw-3", ["luigi-viewers"]),
    "wendy": ("wendy-Pw-4", ["luigi-workers"]),
    "etl-bot": ("etl-bot-Pw-5", ["etl-services"]),   # worker only through nesting
    "carl": ("carl-Pw-6", ["cycle-a"]),              # groups in a membership cycle
    "nobody": ("nobody-Pw-7", []),                   # valid account, no role
}
# group -> groups it is a direct member of (nesting)
GROUP_PARENTS: dict[str, list[str]] = {
    "luigi-admins": [], "luigi-operators": [], "luigi-viewers": [], "luigi-workers": [],
    "etl-services": ["luigi-workers"],
    "cycle-a": ["cycle-b"], "cycle-b": ["cycle-a", "luigi-viewers"],
}
AD_USER = ("ada", "ada-Pw-8", "luigi-admins")  # sAMAccountName, password, group
POSIX_GROUP = ("legacy-ops", ["olga"])           # posixGroup cn, memberUid values

# A minimal AD-like schema: sAMAccountName with Microsoft's OID, on an auxiliary class.
_AD_SCHEMA = """
attributetype ( 1.2.840.113556.1.4.221 NAME 'sAMAccountName'
    EQUALITY caseIgnoreMatch SUBSTR caseIgnoreSubstringsMatch
    SYNTAX 1.3.6.1.4.1.1466.115.121.1.15 SINGLE-VALUE )
objectclass ( 1.3.6.1.4.1.99999.1.1 NAME 'adLikeUser' SUP top AUXILIARY MAY ( sAMAccountName ) )
"""


@dataclass
class TestCA:
    """A CA and a server certificate for 127.0.0.1/localhost, as PEM files."""

    dir: Path
    ca_file: Path = field(init=False)
    cert_file: Path = field(init=False)
    key_file: Path = field(init=False)

    def __post_init__(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        now = datetime.datetime.now(datetime.timezone.utc)
        ca_key = ec.generate_private_key(ec.SECP256R1())
        ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "luigi-appliance test CA")])
        ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
              .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
              .not_valid_before(now - datetime.timedelta(minutes=5))
              .not_valid_after(now + datetime.timedelta(days=2))
              .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
              .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
              .sign(ca_key, hashes.SHA256()))
        key = ec.generate_private_key(ec.SECP256R1())
        cert = (x509.CertificateBuilder()
                .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
                .issuer_name(ca_name).public_key(key.public_key())
                .serial_number(x509.random_serial_number())
                .not_valid_before(now - datetime.timedelta(minutes=5))
                .not_valid_after(now + datetime.timedelta(days=2))
                .add_extension(x509.SubjectAlternativeName([
                    x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
                .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
                .sign(ca_key, hashes.SHA256()))
        self.ca_file = self.dir / "ca.pem"
        self.cert_file = self.dir / "server.pem"
        self.key_file = self.dir / "server.key"
        self.ca_file.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
        self.cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        self.key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                    serialization.NoEncryption()))
        self.key_file.chmod(0o600)


class Slapd:
    """One slapd process on two loopback ports; ``stop()``/``start()`` keep its data."""

    def __init__(self, root: Path, ca: TestCA):
        self.root = root
        self.ca = ca
        self.port = free_port()
        self.ldaps_port = free_port()
        self.proc: subprocess.Popen | None = None
        (root / "db").mkdir(parents=True)
        (root / "ad.schema").write_text(_AD_SCHEMA)
        self.conf = root / "slapd.conf"
        self.conf.write_text(f"""
include /etc/ldap/schema/core.schema
include /etc/ldap/schema/cosine.schema
include /etc/ldap/schema/nis.schema
include /etc/ldap/schema/inetorgperson.schema
include {root / 'ad.schema'}
modulepath /usr/lib/ldap
moduleload back_mdb
moduleload memberof
pidfile {root / 'slapd.pid'}
TLSCACertificateFile {ca.ca_file}
TLSCertificateFile {ca.cert_file}
TLSCertificateKeyFile {ca.key_file}
database mdb
suffix "{SUFFIX}"
rootdn "{ROOT_DN}"
rootpw {ROOT_PW}
directory {root / 'db'}
maxsize 67108864
overlay memberof
memberof-group-oc groupOfNames
memberof-member-ad member
memberof-memberof-ad memberOf
memberof-refint true
access to attrs=userPassword by self write by anonymous auth by * none
access to * by dn.exact="{BIND_DN}" read by self read by * none
""")
        self.log = root / "slapd.log"

    @property
    def uri(self) -> str:
        return f"ldap://127.0.0.1:{self.port}"

    @property
    def ldaps_uri(self) -> str:
        return f"ldaps://127.0.0.1:{self.ldaps_port}"

    def start(self) -> None:
        # 127.0.0.2 is loopback too, but not a name in the certificate: for the host-name check.
        urls = f"{self.uri}/ {self.ldaps_uri}/ ldaps://127.0.0.2:{self.ldaps_port}/"
        with open(self.log, "ab") as log:
            # -d 0: stay in the foreground (so the fixture owns the process), log nothing extra.
            self.proc = subprocess.Popen([SLAPD, "-f", str(self.conf), "-h", urls, "-d", "0"],
                                         stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"slapd exited with {self.proc.returncode}: {self.log.read_text()}")
            try:
                conn = ldap3.Connection(ldap3.Server(self.uri, connect_timeout=1), ROOT_DN, ROOT_PW)
                if conn.bind():
                    conn.unbind()
                    return
            except ldap3.core.exceptions.LDAPException:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"slapd did not answer on {self.uri}: {self.log.read_text()}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(20)

    def admin(self) -> ldap3.Connection:
        conn = ldap3.Connection(ldap3.Server(self.uri), ROOT_DN, ROOT_PW, raise_exceptions=True)
        conn.bind()
        return conn

    def populate(self) -> None:
        conn = self.admin()
        add = conn.add
        add(SUFFIX, ["dcObject", "organization"], {"o": "Example", "dc": "example"})
        for ou in ("people", "services", "groups", "ad"):
            add(f"ou={ou},{SUFFIX}", ["organizationalUnit"], {"ou": ou})
        add(BIND_DN, ["account", "simpleSecurityObject"], {"uid": "luigi-appliance", "userPassword": BIND_PW})
        for name, (password, _) in PEOPLE.items():
            add(person_dn(name), ["inetOrgPerson"],
                {"uid": name, "cn": name, "sn": name, "userPassword": password})
        sam, password, _ = AD_USER
        add(ad_dn(), ["inetOrgPerson", "adLikeUser"],
            {"cn": "Ada Admin", "sn": "Admin", "sAMAccountName": sam, "userPassword": password})
        # groupOfNames needs a member at creation: create every group with the root DN, then fix.
        for group in GROUP_PARENTS:
            add(group_dn(group), ["groupOfNames"], {"cn": group, "member": [ROOT_DN]})
        members: dict[str, list[str]] = {g: [] for g in GROUP_PARENTS}
        for name, (_, groups) in PEOPLE.items():
            for group in groups:
                members[group].append(person_dn(name))
        for group, parents in GROUP_PARENTS.items():
            for parent in parents:
                members[parent].append(group_dn(group))
        members[AD_USER[2]].append(ad_dn())
        for group, dns in members.items():
            if dns:
                conn.modify(group_dn(group), {"member": [(ldap3.MODIFY_REPLACE, dns)]})
        posix, uids = POSIX_GROUP
        add(group_dn(posix), ["posixGroup"], {"cn": posix, "gidNumber": "5000", "memberUid": uids})
        conn.unbind()


def person_dn(name: str) -> str:
    return f"uid={name},ou=people,{SUFFIX}"


def group_dn(name: str) -> str:
    return f"cn={name},ou=groups,{SUFFIX}"


def ad_dn() -> str:
    return f"cn=Ada Admin,ou=ad,{SUFFIX}"


class Directory:
    """Two replicas (same data, separate processes) and the CA that signed their certificates."""

    def __init__(self, root: Path):
        self.ca = TestCA(root / "ca")
        self.servers = [Slapd(root / "a", self.ca), Slapd(root / "b", self.ca)]
        for server in self.servers:
            server.start()
            server.populate()

    def stop(self) -> None:
        for server in self.servers:
            server.stop()

    def config(self, *, servers: str | None = None, extra: str = "", bind_password_file: Path,
               backend: str = "ldap, local") -> str:
        """The [auth]/[ldap]/[roles]/[families] part of a scheduler.conf for this directory."""
        uris = servers or " ".join(s.ldaps_uri for s in self.servers)
        return f"""
[auth]
backend = {backend}
[ldap]
servers = {uris}
ca_file = {self.ca.ca_file}
connect_timeout = 2
receive_timeout = 5
bind_dn = {BIND_DN}
bind_password_file = {bind_password_file}
user_base = ou=people,{SUFFIX}
group_source = memberof
{extra}
[roles]
luigi-admins = admin
luigi-operators = operator
luigi-workers = worker
luigi-viewers = viewer
[families]
etl-services = Extract, Transform, Rep*
"""
