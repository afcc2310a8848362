"""Passwords checked against an LDAP directory (OpenLDAP, FreeIPA, Active Directory), with ldap3.

One verification: connect to the first reachable server (LDAPS, or StartTLS on ldap://, with the
CA file and host-name check), bind as the search account, find exactly one user entry with the
configured filter (the name RFC 4515-escaped, after a strict pattern check), bind as that entry
with the given password, then collect group names from ``memberOf`` or a group search, following
nested groups up to a depth limit with cycle protection. Roles and task-family allowlists come
from the group names through the [roles] and [families] tables.

Directories compare user names case-insensitively (``uid`` and ``sAMAccountName`` use
caseIgnoreMatch), so ``ALICE`` finds alice's entry: the principal is named in lower case
(``str.casefold``), whatever the case typed, so it is one principal for worker bindings, the
history and the audit.

Failover is done here rather than with ldap3's ServerPool: when every server of a pool is down,
ServerPool sleeps POOLING_LOOP_TIMEOUT (10 s) per cycle on the calling thread, and its "exhaust"
marks are pool state we would have to share between threads. A server that failed is tried
last for ``RETRY_DOWN_AFTER`` seconds; every server is still tried before giving up.
"""

from __future__ import annotations

import logging
import math
import ssl
import threading
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass

import ldap3
from ldap3.core import exceptions as ldap_errors
from ldap3.utils.conv import escape_filter_chars

from luigi_appliance.auth import AuthUnavailable, Principal
from luigi_appliance.auth.groups import roles_and_families
from luigi_appliance.auth.ldap_settings import LdapSettings
from luigi_appliance.auth.registry import register_backend
from luigi_appliance.auth.settings import AuthSettings
from luigi_appliance.config import Settings
from luigi_appliance.settings.inifile import normalise_key

log = logging.getLogger(__name__)

RETRY_DOWN_AFTER = 30.0
INVALID_CREDENTIALS = 49

# Connection-level failures: the server (not the user's input) is the problem; try the next one.
_SERVER_ERRORS = (ldap_errors.LDAPCommunicationError, ldap_errors.LDAPStartTLSError,
                  ldap_errors.LDAPSessionTerminatedByServerError, ldap_errors.LDAPResponseTimeoutError,
                  ldap_errors.LDAPMaximumRetriesError, ssl.SSLError, OSError)


class DirectoryUnavailable(AuthUnavailable):
    """No LDAP server could be used (all down, TLS failure, or the search account refused)."""


@dataclass(frozen=True)
class DirectoryUser:
    """What the directory says about a user, before any password check."""

    dn: str
    groups: frozenset[str]  # group names (group_name_attribute), normalised like config keys


@contextmanager
def _closing(conn: ldap3.Connection) -> Iterator[ldap3.Connection]:
    try:
        yield conn
    finally:
        try:
            conn.unbind()
        except ldap_errors.LDAPException:
            pass


class LdapVerifier:
    """The ``ldap`` account backend (an AccountBackend, see auth/__init__.py). Thread-safe."""

    backend = "ldap"

    def __init__(self, settings: LdapSettings, auth: AuthSettings):
        self.settings = settings
        self.auth = auth
        self._bind_password = settings.read_bind_password()
        self._tls = ldap3.Tls(validate=ssl.CERT_REQUIRED, version=ssl.PROTOCOL_TLS_CLIENT,
                              ca_certs_file=str(settings.ca_file) if settings.ca_file else None)
        self._down_until: dict[str, float] = {}
        self._lock = threading.Lock()
        plain = [u for u in settings.servers if u.startswith("ldap://")]
        if plain and not settings.start_tls:
            log.warning("INSECURE: [ldap] allow_insecure = true: passwords go to %s in clear", ", ".join(plain))

    def _server(self, uri: str) -> ldap3.Server:
        return ldap3.Server(uri, use_ssl=uri.startswith("ldaps://"), tls=self._tls,
                            connect_timeout=self.settings.connect_timeout, get_info=ldap3.NONE)

    # -- public -------------------------------------------------------------------------------

    def check_username(self, name: str) -> bool:
        # fullmatch: with match, a pattern ending in $ would accept a trailing newline.
        return bool(self.settings.username_pattern.fullmatch(name))

    def knows(self, name: str) -> bool:
        return False  # only a directory round trip can tell

    def verify(self, name: str, password: str) -> Principal | None:
        """The principal for name and password; None if wrong or unknown. AuthUnavailable if down."""
        if not password or not self.check_username(name):
            return None  # an empty password would be an anonymous bind, which "succeeds"
        for uri, server in self._ordered():
            try:
                return self._verify_on(server, name, password)
            except _SERVER_ERRORS as exc:
                self._mark_down(uri, exc)
        raise DirectoryUnavailable(f"no LDAP server reachable ({', '.join(self.settings.servers)})")

    def lookup(self, name: str) -> DirectoryUser | None:
        """The user's entry and groups, without a password (for ``ldap test``)."""
        if not self.check_username(name):
            return None
        for uri, server in self._ordered():
            try:
                with self._service_connection(server) as conn:
                    return self._find_user(conn, name)
            except _SERVER_ERRORS as exc:
                self._mark_down(uri, exc)
        raise DirectoryUnavailable(f"no LDAP server reachable ({', '.join(self.settings.servers)})")

    def principal(self, name: str) -> Principal | None:
        """The principal the directory gives the user now, without a password (re-checking a
        token); None when the entry is gone or no group maps to a role. AuthUnavailable if down."""
        user = self.lookup(name)
        return None if user is None else self.principal_for(name, user)

    def principal_for(self, name: str, user: DirectoryUser) -> Principal | None:
        role, families = roles_and_families(user.groups, self.auth)
        if role is None:
            log.warning("LDAP user %r found but none of its groups maps to a role in [roles]", name)
            return None
        return Principal(name.casefold(), role, self.backend, user.groups, families)

    def reload(self) -> None:
        self._bind_password = self.settings.read_bind_password()

    # -- connection handling ------------------------------------------------------------------

    def _ordered(self) -> Iterator[tuple[str, ldap3.Server]]:
        """Servers to try, ones not recently failed first. A new Server object every time:
        ldap3 remembers an address that failed to connect as unavailable for minutes."""
        now = time.monotonic()
        with self._lock:
            up = [u for u in self.settings.servers if self._down_until.get(u, 0) <= now]
        for uri in up + [u for u in self.settings.servers if u not in up]:
            yield uri, self._server(uri)

    def _mark_down(self, uri: str, exc: Exception) -> None:
        with self._lock:
            self._down_until[uri] = time.monotonic() + RETRY_DOWN_AFTER
        log.warning("LDAP server %s unusable, trying the next one: %s", uri, type(exc).__name__)

    def _connect(self, server: ldap3.Server, user: str | None, password: str | None) -> ldap3.Connection:
        conn = ldap3.Connection(server, user=user, password=password, read_only=True, raise_exceptions=False,
                                auto_referrals=self.settings.referrals,
                                # ldap3 packs it into SO_RCVTIMEO as whole seconds.
                                receive_timeout=max(1, math.ceil(self.settings.receive_timeout)))
        conn.open()
        if server.name.startswith("ldap://") and self.settings.start_tls:
            if not conn.start_tls():
                conn.unbind()
                raise ldap_errors.LDAPStartTLSError(f"StartTLS refused by {server.name}")
        return conn

    def _service_connection(self, server: ldap3.Server) -> AbstractContextManager[ldap3.Connection]:
        conn = self._connect(server, self.settings.bind_dn, self._bind_password)
        if self.settings.bind_dn and not conn.bind():
            code = conn.result.get("result")
            conn.unbind()
            if code == INVALID_CREDENTIALS:
                # Our own account is wrong: no user can log in; say it loudly, answer 503.
                raise DirectoryUnavailable(f"the search account {self.settings.bind_dn} was refused by "
                                           f"{server.name} (invalid credentials): check [ldap] bind_password")
            raise ldap_errors.LDAPCommunicationError(
                f"bind of the search account failed: {conn.result.get('description')}")
        return _closing(conn)

    def _verify_on(self, server: ldap3.Server, name: str, password: str) -> Principal | None:
        with self._service_connection(server) as conn:
            user = self._find_user(conn, name)
        if user is None:
            return None
        with _closing(self._connect(server, user.dn, password)) as user_conn:
            if not user_conn.bind():
                if user_conn.result.get("result") == INVALID_CREDENTIALS:
                    return None
                raise ldap_errors.LDAPCommunicationError(f"user bind failed: {user_conn.result.get('description')}")
        return self.principal_for(name, user)

    # -- directory queries --------------------------------------------------------------------

    def _find_user(self, conn: ldap3.Connection, name: str) -> DirectoryUser | None:
        search_filter = self.settings.user_filter.format(username=escape_filter_chars(name))
        attrs = ["memberOf"] if self.settings.group_source == "memberof" else []
        conn.search(self.settings.user_base, search_filter, ldap3.SUBTREE, attributes=attrs, size_limit=2)
        if conn.result.get("result") not in (0, 4):  # success, or sizeLimitExceeded (two matches)
            log.error("LDAP user search under %s failed: %s", self.settings.user_base, conn.result.get("description"))
        entries = [e for e in conn.response or [] if e.get("type") == "searchResEntry"]
        if len(entries) != 1:
            if len(entries) > 1:
                log.error("LDAP user filter matched more than one entry for %r: refusing", name)
            return None
        dn = entries[0]["dn"]
        if self.settings.group_source == "memberof":
            direct = list(entries[0]["attributes"].get("memberOf", []))
        else:
            direct = self._search_groups(conn, dn, name)
        return DirectoryUser(dn, frozenset(self._expand(conn, direct)))

    def _search_groups(self, conn: ldap3.Connection, member_dn: str, username: str) -> list[str]:
        search_filter = self.settings.group_filter.format(dn=escape_filter_chars(member_dn),
                                                          username=escape_filter_chars(username))
        conn.search(self.settings.group_base, search_filter, ldap3.SUBTREE, attributes=[])
        return [e["dn"] for e in conn.response or [] if e.get("type") == "searchResEntry"]

    def _expand(self, conn: ldap3.Connection, direct: list[str]) -> Iterator[str]:
        """Names of the direct groups and their ancestors, breadth first, each DN visited once."""
        seen: set[str] = set()
        level = [dn.lower() for dn in direct]
        for depth in range(self.settings.nested_depth + 1):
            next_level: list[str] = []
            for dn in level:
                if dn in seen:
                    continue  # membership cycle, or reached by two paths
                seen.add(dn)
                name, parents = self._group(conn, dn)
                if name:
                    yield normalise_key(name)
                if depth < self.settings.nested_depth:
                    next_level.extend(p.lower() for p in parents)
            level = next_level
            if not level:
                return

    def _group(self, conn: ldap3.Connection, dn: str) -> tuple[str | None, list[str]]:
        attr = self.settings.group_name_attribute
        attrs = [attr, "memberOf"] if self.settings.group_source == "memberof" else [attr]
        conn.search(dn, "(objectClass=*)", ldap3.BASE, attributes=attrs)
        entries = [e for e in conn.response or [] if e.get("type") == "searchResEntry"]
        if not entries:
            return None, []
        values = entries[0]["attributes"].get(attr)
        name = values[0] if isinstance(values, list) and values else (values or None)
        if self.settings.group_source == "memberof":
            parents = list(entries[0]["attributes"].get("memberOf", []))
        else:
            parents = self._search_groups(conn, entries[0]["dn"], entries[0]["dn"])
        return (str(name) if name else None), parents


def ldap_backend(settings: Settings) -> LdapVerifier:
    """``[auth] backend = ldap``: the directory of the ``[ldap]`` section."""
    return LdapVerifier(settings.ldap, settings.auth)


register_backend(LdapVerifier.backend, ldap_backend)
