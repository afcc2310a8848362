"""A real OpenID Provider for the tests: panva's certified ``oidc-provider`` (npm, 8.x) on loopback.

``tests/oidc_provider/provider.mjs`` runs it under Node with HTTPS from a test CA made here with
``cryptography``; its packages come from ``npm ci --prefix tests/oidc_provider`` (see ``.ci/run``).
The issuer is ``https://localhost:PORT``: another site than the scheduler's ``127.0.0.1``, so a
browser treats the redirects as cross-site, as in production. Everything secret (client secrets,
users' passwords, the private JWKS, cookie keys) is in 0600 files in the instance's directory,
never on a command line.

What a test gets (``OidcProvider``): the issuer URL, the CA file, the registered clients'
credentials (a secret file, or a private key for ``private_key_jwt``), the users, a
client-credentials JWT for a chosen audience, key rotation (``rotate_keys``/``remove_key``: the
JWKS file is rewritten and SIGHUP makes the provider swap in a new instance on the same socket,
sessions and refresh tokens kept), a signer with the IdP's own key for tokens a real IdP would
not issue (expired, wrong audience), and ``login`` driving the IdP's login page with requests.
Several instances run at once (one port and directory each). ``provider_fixture`` makes a pytest
fixture of one, to assign in a test module or conftest.
"""

from __future__ import annotations

import atexit
import base64
import datetime as dt
import hashlib
import ipaddress
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from html.parser import HTMLParser
from pathlib import Path
from typing import Any, Literal
from urllib.parse import parse_qs, quote, urlencode, urljoin, urlsplit

import pytest
import requests
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.x509.oid import NameOID

PROVIDER_DIR = Path(__file__).resolve().parent / "oidc_provider"
NODE_MODULES = PROVIDER_DIR / "node_modules"
START_TIMEOUT = 30.0

# The users every instance knows unless a test gives its own. `many` is in 300 groups (plus
# luigi-viewers), past where a cookie holding the ID token would overflow 4 KB.
MANY_GROUPS = tuple(f"team-{n:03d}" for n in range(300))


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def jwt_parts(token: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """(header, claims) of a compact JWS, NOT verified: for assertions on what the IdP issued."""
    header, claims, _signature = token.split(".")
    return json.loads(b64url_decode(header)), json.loads(b64url_decode(claims))


@dataclass(frozen=True)
class OidcUser:
    """A user of the IdP's login page and the claims its tokens carry (``sub`` is the username)."""

    username: str
    password: str
    groups: tuple[str, ...] = ()
    email: str = ""
    name: str = ""

    def claims(self) -> dict[str, Any]:
        return {"preferred_username": self.username, "name": self.name or self.username.title(),
                "email": self.email or f"{self.username}@example.test", "email_verified": True,
                "groups": list(self.groups)}


def default_users() -> tuple[OidcUser, ...]:
    return (OidcUser("alice", "alice-Idp-Pw-1", ("luigi-admins",)),
            OidcUser("olga", "olga-Idp-Pw-2", ("luigi-operators",)),
            OidcUser("victor", "victor-Idp-Pw-3", ("luigi-viewers",)),
            OidcUser("nobody", "nobody-Idp-Pw-4"),
            OidcUser("many", "many-Idp-Pw-5", (*MANY_GROUPS, "luigi-viewers")))


@dataclass(frozen=True)
class OidcClient:
    """A client registration. ``auth`` is ``client_secret_basic``, ``client_secret_post`` or
    ``private_key_jwt`` (the fixture then makes its key pair and registers the public JWKS)."""

    client_id: str
    redirect_uris: tuple[str, ...] = ()
    post_logout_redirect_uris: tuple[str, ...] = ()
    backchannel_logout_uri: str | None = None
    grant_types: tuple[str, ...] = ("authorization_code", "refresh_token", "client_credentials")
    auth: str = "client_secret_basic"


@dataclass(frozen=True)
class ClientCredentials:
    """What the relying party is configured with. The secret is also in ``secret_file`` (0600);
    a ``private_key_jwt`` client has ``private_key_file`` (PKCS#8 PEM, 0600) and ``key_id``."""

    client: OidcClient
    secret: str | None = None
    secret_file: Path | None = None
    private_key_file: Path | None = None
    key_id: str | None = None

    @property
    def client_id(self) -> str:
        return self.client.client_id


def _rsa_jwk(key: rsa.RSAPrivateKey, kid: str) -> dict[str, str]:
    priv = key.private_numbers()
    pub = priv.public_numbers

    def num(value: int) -> str:
        return b64url(value.to_bytes((value.bit_length() + 7) // 8, "big"))

    return {"kty": "RSA", "kid": kid, "use": "sig", "alg": "RS256", "n": num(pub.n), "e": num(pub.e),
            "d": num(priv.d), "p": num(priv.p), "q": num(priv.q), "dp": num(priv.dmp1), "dq": num(priv.dmq1),
            "qi": num(priv.iqmp)}


def public_jwk(jwk: Mapping[str, str]) -> dict[str, str]:
    return {k: jwk[k] for k in ("kty", "kid", "use", "alg", "n", "e")}


def rsa_public_key(jwk: Mapping[str, str]) -> rsa.RSAPublicKey:
    """The RSA public key of a JWK (as published at the IdP's jwks_uri)."""
    return rsa.RSAPublicNumbers(int.from_bytes(b64url_decode(jwk["e"]), "big"),
                                int.from_bytes(b64url_decode(jwk["n"]), "big")).public_key()


def _rsa_private_key(jwk: Mapping[str, str]) -> rsa.RSAPrivateKey:
    def num(name: str) -> int:
        return int.from_bytes(b64url_decode(jwk[name]), "big")

    public = rsa.RSAPublicNumbers(num("e"), num("n"))
    return rsa.RSAPrivateNumbers(num("p"), num("q"), num("d"), num("dp"), num("dq"), num("qi"), public).private_key()


def sign_rs256(claims: Mapping[str, Any], key: rsa.RSAPrivateKey, header: Mapping[str, Any]) -> str:
    """A compact RS256 JWS of ``claims`` with exactly ``header`` (plus alg), signed by ``key``."""
    head = b64url(json.dumps({"alg": "RS256", **header}, separators=(",", ":")).encode())
    body = b64url(json.dumps(dict(claims), separators=(",", ":")).encode())
    signature = key.sign(f"{head}.{body}".encode(), padding.PKCS1v15(), hashes.SHA256())
    return f"{head}.{body}.{b64url(signature)}"


def verify_rs256(token: str, jwks: Mapping[str, Any]) -> dict[str, Any]:
    """The claims of an RS256 token whose signature verifies with the JWKS key named by its kid
    (raises ``KeyError`` for an unknown kid, ``cryptography``'s InvalidSignature for a bad one)."""
    header, claims = jwt_parts(token)
    assert header["alg"] == "RS256", header
    jwk = next((k for k in jwks["keys"] if k.get("kid") == header.get("kid")), None)
    if jwk is None:
        raise KeyError(f"kid {header['kid']} not in the JWKS")
    head, body, signature = token.split(".")
    rsa_public_key(jwk).verify(b64url_decode(signature), f"{head}.{body}".encode(), padding.PKCS1v15(),
                               hashes.SHA256())
    return claims


def write_test_ca(directory: Path, hosts: tuple[str, ...] = ("localhost", "127.0.0.1")) -> tuple[Path, Path, Path]:
    """ca.crt, and server.crt/server.key (0600) for ``hosts``, signed by that CA."""
    now = dt.datetime.now(dt.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "OIDC provider test CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(hours=1))
          .not_valid_after(now + dt.timedelta(days=2))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                       content_commitment=False, key_encipherment=False, data_encipherment=False,
                                       key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
          .sign(ca_key, hashes.SHA256()))
    names: list[x509.GeneralName] = []
    for host in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hosts[0])]))
            .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(hours=1)).not_valid_after(now + dt.timedelta(days=2))
            .add_extension(x509.SubjectAlternativeName(names), critical=False)
            .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .sign(ca_key, hashes.SHA256()))
    paths = (directory / "ca.crt", directory / "server.crt", directory / "server.key")
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    _write_secret(paths[2], key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                              serialization.NoEncryption()).decode())
    return paths


def _write_secret(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(text)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _node() -> str:
    node = shutil.which("node")
    assert node, "node not found on PATH: the OIDC tests need Node.js 20 (see .ci/run)"
    assert (NODE_MODULES / "oidc-provider" / "package.json").exists(), (
        f"{NODE_MODULES} has no oidc-provider: run `npm ci --prefix {PROVIDER_DIR} --no-audit --no-fund` "
        "(.ci/run does)")
    return node


def resource_for(audience: str) -> str:
    """The resource indicator (RFC 8707, an absolute URI) the IdP maps to ``aud = audience``."""
    return audience if re.match(r"^[a-z][a-z0-9+.-]*:", audience) else f"urn:luigi-appliance-test:{quote(audience)}"


@dataclass
class OidcProvider:
    """One oidc-provider process (not started until ``start``). ``name`` prefixes its cookies and
    directory; ``backchannel_ca_files`` are the CAs it trusts when it POSTs a logout token to a
    client's ``backchannel_logout_uri`` (the scheduler's certificate)."""

    name: str = "idp"
    users: tuple[OidcUser, ...] = field(default_factory=default_users)
    clients: tuple[OidcClient, ...] = (OidcClient("luigi-appliance"),)
    audiences: tuple[str, ...] = ("luigi-appliance",)
    ttl: dict[str, int] = field(default_factory=dict)
    backchannel_ca_files: tuple[Path, ...] = ()
    rotate_refresh_tokens: bool = True
    root: Path = field(init=False)
    port: int = field(init=False)
    ca_file: Path = field(init=False)
    credentials: dict[str, ClientCredentials] = field(init=False, default_factory=dict)
    startup_seconds: float = field(init=False, default=0.0)
    _cert: Path = field(init=False)
    _key: Path = field(init=False)
    _proc: subprocess.Popen | None = field(init=False, default=None)
    _jwks: list[dict[str, str]] = field(init=False, default_factory=list)
    _cookie_keys: list[str] = field(init=False, default_factory=list)

    def __post_init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix=f"luigi-appliance-oidc-{self.name}-"))
        self.port = _free_port()
        self.ca_file, self._cert, self._key = write_test_ca(self.root)
        self._cookie_keys = [secrets.token_urlsafe(32)]
        self._jwks = [self._new_jwk()]
        for client in self.clients:
            self._register(client)

    @property
    def issuer(self) -> str:
        return f"https://localhost:{self.port}"

    @property
    def config_file(self) -> Path:
        return self.root / "provider.json"

    @property
    def jwks_file(self) -> Path:
        return self.root / "jwks.json"

    @property
    def log_file(self) -> Path:
        return self.root / "provider.log"

    def user(self, username: str) -> OidcUser:
        return next(u for u in self.users if u.username == username)

    def client(self, client_id: str | None = None) -> ClientCredentials:
        """A registered client's credentials (the first one by default)."""
        return self.credentials[client_id or self.clients[0].client_id]

    def _new_jwk(self) -> dict[str, str]:
        return _rsa_jwk(rsa.generate_private_key(public_exponent=65537, key_size=2048),
                        f"{self.name}-{uuid.uuid4().hex[:12]}")

    def _register(self, client: OidcClient) -> ClientCredentials:
        directory = self.root / "clients"
        directory.mkdir(exist_ok=True)
        if client.auth == "private_key_jwt":
            key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
            key_file = directory / f"{client.client_id}.key"
            _write_secret(key_file, key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                      serialization.NoEncryption()).decode())
            creds = ClientCredentials(client, private_key_file=key_file, key_id=f"{client.client_id}-key-1")
        else:
            secret = secrets.token_urlsafe(32)
            secret_file = directory / f"{client.client_id}.secret"
            _write_secret(secret_file, secret + "\n")
            creds = ClientCredentials(client, secret=secret, secret_file=secret_file)
        self.credentials[client.client_id] = creds
        return creds

    def _client_metadata(self, creds: ClientCredentials) -> dict[str, Any]:
        client = creds.client
        # oidc-provider refuses a code-flow client without redirect URIs; until a test sets the
        # scheduler's (set_client), such a client is a machine client only.
        grants = list(client.grant_types) if client.redirect_uris else ["client_credentials"]
        meta: dict[str, Any] = {
            "client_id": client.client_id, "grant_types": grants,
            "response_types": ["code"] if "authorization_code" in grants else [],
            "redirect_uris": list(client.redirect_uris),
            "post_logout_redirect_uris": list(client.post_logout_redirect_uris),
            "token_endpoint_auth_method": client.auth,
            "scope": "openid offline_access profile email groups",
        }
        if client.backchannel_logout_uri:
            meta["backchannel_logout_uri"] = client.backchannel_logout_uri
            meta["backchannel_logout_session_required"] = True
        if creds.private_key_file is not None:
            key = serialization.load_pem_private_key(creds.private_key_file.read_bytes(), None)
            assert isinstance(key, rsa.RSAPrivateKey)
            meta["jwks"] = {"keys": [public_jwk(_rsa_jwk(key, creds.key_id or ""))]}
        else:
            meta["client_secret"] = creds.secret
        return meta

    def _write_config(self) -> None:
        _write_secret(self.jwks_file, json.dumps({"keys": self._jwks}))
        config = {
            "issuer": self.issuer, "port": self.port, "host": "127.0.0.1",
            "tls_cert_file": str(self._cert), "tls_key_file": str(self._key),
            "jwks_file": str(self.jwks_file), "cookie_keys": self._cookie_keys, "cookie_prefix": self.name,
            "clients": [self._client_metadata(c) for c in self.credentials.values()],
            "users": {u.username: {"password": u.password, "claims": u.claims()} for u in self.users},
            "resource_servers": {resource_for(a): {"audience": a, "scope": ""} for a in self.audiences},
            "ttl": self.ttl, "rotate_refresh_tokens": self.rotate_refresh_tokens,
            "backchannel_ca_files": [str(p) for p in self.backchannel_ca_files] or None,
        }
        _write_secret(self.config_file, json.dumps(config, indent=1))

    # ---- process -------------------------------------------------------------------------------

    def start(self) -> OidcProvider:
        """Start Node and wait for the discovery document; ``startup_seconds`` says how long it took."""
        node = _node()
        self._write_config()
        started = time.monotonic()
        # stdin is a pipe only this process holds: the provider exits when it closes, so a test
        # run that dies (even by SIGKILL) leaves no Node process behind.
        with open(self.log_file, "ab") as log:
            self._proc = subprocess.Popen([node, str(PROVIDER_DIR / "provider.mjs"), str(self.config_file)],
                                          stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.PIPE,
                                          cwd=PROVIDER_DIR)
        atexit.register(self.destroy)
        self._wait(lambda: self.discovery(timeout=2) is not None, "the discovery document")
        self.startup_seconds = time.monotonic() - started
        return self

    def _wait(self, ready: Callable[[], bool], what: str, timeout: float = START_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self._proc is not None, "the provider was not started"
            if self._proc.poll() is not None:
                raise AssertionError(f"oidc-provider exited with {self._proc.returncode}:\n{self.log()}")
            try:
                if ready():
                    return
            except (requests.ConnectionError, OSError):
                pass
            time.sleep(0.05)
        raise AssertionError(f"oidc-provider: no {what} after {timeout}s:\n{self.log()}")

    def log(self) -> str:
        return self.log_file.read_text(errors="replace") if self.log_file.exists() else ""

    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def stop(self) -> None:
        """Stop the process (the directory stays until ``destroy``; ``start`` again reuses the port)."""
        if self._proc is not None and self._proc.stdin is not None:
            self._proc.stdin.close()
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait(timeout=10)
        self._proc = None

    def destroy(self) -> None:
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)
        atexit.unregister(self.destroy)

    def reload(self) -> None:
        """Rewrite the config and JWKS files, SIGHUP, and wait until the new signing key is served."""
        self._write_config()
        expected = {k["kid"] for k in self._jwks}

        refused = self.log().count("reload refused")
        assert self.hangup() == "reloaded", f"the provider refused its new config:\n{self.log()}"
        assert self.log().count("reload refused") == refused
        assert {k["kid"] for k in self.jwks()["keys"]} == expected, self.log()

    def hangup(self) -> str:
        """SIGHUP as it is, and the provider's answer: ``reloaded``, or ``refused`` (a bad config
        or JWKS file: the old one stays in force)."""

        def answers() -> tuple[int, int]:
            log = self.log()
            return log.count("reloaded, signing kid"), log.count("reload refused")

        before = answers()
        assert self._proc is not None, "the provider was not started"
        self._proc.send_signal(signal.SIGHUP)
        self._wait(lambda: answers() != before, "answer to SIGHUP", timeout=10)
        return "reloaded" if answers()[0] > before[0] else "refused"

    # ---- registration changes (the scheduler's redirect URI is known only once it has a port) ----

    def set_client(self, client: OidcClient) -> ClientCredentials:
        """Register or replace a client (a new one gets new credentials); reloads if running."""
        old = self.credentials.get(client.client_id)
        creds = replace(old, client=client) if old and old.client.auth == client.auth else self._register(client)
        self.credentials[client.client_id] = creds
        known = [c.client_id for c in self.clients]
        self.clients = (tuple(client if c.client_id == client.client_id else c for c in self.clients)
                        if client.client_id in known else (*self.clients, client))
        if self.running():
            self.reload()
        return creds

    def add_audience(self, audience: str) -> None:
        if audience not in self.audiences:
            self.audiences = (*self.audiences, audience)
            if self.running():
                self.reload()

    # ---- keys ---------------------------------------------------------------------------------

    @property
    def signing_kid(self) -> str:
        """The kid new tokens are signed with (the first key of the JWKS)."""
        return self._jwks[0]["kid"]

    @property
    def kids(self) -> list[str]:
        return [k["kid"] for k in self._jwks]

    def rotate_keys(self) -> str:
        """A new signing key first in the JWKS (the old ones still published and verifying); the
        provider reloads without a restart. Returns the new kid."""
        self._jwks.insert(0, self._new_jwk())
        self.reload()
        return self.signing_kid

    def remove_key(self, kid: str) -> None:
        """Stop publishing (and signing with) ``kid``: tokens it signed no longer verify."""
        assert len(self._jwks) > 1, "the provider needs at least one signing key"
        self._jwks = [k for k in self._jwks if k["kid"] != kid]
        self.reload()

    def sign_jwt(self, claims: Mapping[str, Any], *, kid: str | None = None,
                 header: Mapping[str, Any] | None = None) -> str:
        """A JWT signed with the IdP's own private key ``kid`` (default: the current one), for the
        tokens a real IdP would not issue on demand (expired, wrong audience, odd claims)."""
        jwk = next(k for k in self._jwks if k["kid"] == (kid or self.signing_kid))
        return sign_rs256(claims, _rsa_private_key(jwk), {"typ": "JWT", "kid": jwk["kid"], **(header or {})})

    def public_key_pem(self, kid: str | None = None) -> bytes:
        """The public key of ``kid`` as PEM (what an HS256-with-the-public-key forgery uses as secret)."""
        jwk = next(k for k in self._jwks if k["kid"] == (kid or self.signing_kid))
        return rsa_public_key(jwk).public_bytes(serialization.Encoding.PEM,
                                                serialization.PublicFormat.SubjectPublicKeyInfo)

    # ---- protocol -----------------------------------------------------------------------------

    def discovery(self, timeout: float = 10) -> dict[str, Any]:
        response = requests.get(f"{self.issuer}/.well-known/openid-configuration", verify=str(self.ca_file),
                                timeout=timeout)
        response.raise_for_status()
        return response.json()

    def jwks(self) -> dict[str, Any]:
        response = requests.get(self.discovery()["jwks_uri"], verify=str(self.ca_file), timeout=10)
        response.raise_for_status()
        return response.json()

    def client_assertion(self, client_id: str) -> str:
        """A private_key_jwt client assertion for the token endpoint (RFC 7523)."""
        creds = self.client(client_id)
        assert creds.private_key_file is not None, f"{client_id} does not use private_key_jwt"
        key = serialization.load_pem_private_key(creds.private_key_file.read_bytes(), None)
        assert isinstance(key, rsa.RSAPrivateKey)
        now = int(time.time())
        claims = {"iss": client_id, "sub": client_id, "aud": self.discovery()["token_endpoint"],
                  "jti": secrets.token_urlsafe(16), "iat": now, "exp": now + 60}
        return sign_rs256(claims, key, {"typ": "JWT", "kid": creds.key_id})

    def token_request(self, client_id: str | None, data: Mapping[str, str]) -> requests.Response:
        """POST to the token endpoint, authenticated as the client the way it is registered."""
        creds = self.client(client_id)
        form = dict(data)
        auth: tuple[str, str] | None = None
        if creds.client.auth == "private_key_jwt":
            form.update(client_assertion_type="urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
                        client_assertion=self.client_assertion(creds.client_id))
        elif creds.client.auth == "client_secret_post":
            form.update(client_id=creds.client_id, client_secret=creds.secret or "")
        else:
            auth = (creds.client_id, creds.secret or "")
        return requests.post(self.discovery()["token_endpoint"], data=form, auth=auth, verify=str(self.ca_file),
                             timeout=10)

    def client_credentials_token(self, audience: str, client_id: str | None = None) -> str:
        """A client-credentials access token: an RS256 JWT (typ at+jwt) with ``aud = audience``,
        ``sub = client_id``, signed with the current key. Unknown audiences are registered first."""
        self.add_audience(audience)
        response = self.token_request(client_id, {"grant_type": "client_credentials",
                                                  "resource": resource_for(audience)})
        assert response.status_code == 200, response.text
        return response.json()["access_token"]

    def login(self, session: requests.Session, authorize_url: str, username: str,
              password: str | None = None) -> str:
        """Drive the IdP's pages with ``session`` from ``authorize_url`` (the relying party's redirect
        to the IdP) through our login form, and return the URL the IdP redirects back to (not
        followed: the caller passes it to the relying party). Asserts on a refused login."""
        verify = str(self.ca_file)
        url = authorize_url
        for _ in range(10):
            if not url.startswith(self.issuer):
                return url
            response = session.get(url, allow_redirects=False, verify=verify, timeout=10)
            if response.is_redirect:
                url = urljoin(url, response.headers["location"])
                continue
            form = _find_form(response.text, "login-form").action
            assert form, f"the IdP answered {response.status_code} without a login form:\n{response.text}"
            response = session.post(urljoin(url, form), allow_redirects=False, verify=verify, timeout=10,
                                    data={"username": username,
                                          "password": self.user(username).password if password is None else password})
            assert response.is_redirect, f"login as {username} refused:\n{response.text}"
            url = urljoin(url, response.headers["location"])
        raise AssertionError(f"the IdP kept redirecting; last URL {url}")

    def logout(self, session: requests.Session, end_session_url: str) -> str:
        """Follow an RP-initiated logout (the relying party's redirect to ``end_session_endpoint``),
        confirm on the IdP's page as the user would, and return where the IdP sends the browser
        (the post_logout_redirect_uri, with ``state``). The IdP delivers back-channel logout
        tokens before it answers."""
        verify = str(self.ca_file)
        response = session.get(end_session_url, allow_redirects=False, verify=verify, timeout=10)
        assert response.status_code == 200, f"end_session answered {response.status_code}:\n{response.text}"
        form = _find_form(response.text, "op.logoutForm")
        assert form.action, f"no logout form on the IdP's page:\n{response.text}"
        response = session.post(urljoin(end_session_url, form.action), data={**form.hidden, "logout": "yes"},
                                allow_redirects=False, verify=verify, timeout=10)
        assert response.is_redirect, f"logout not confirmed ({response.status_code}):\n{response.text}"
        url = urljoin(end_session_url, response.headers["location"])
        while url.startswith(self.issuer):  # the IdP's own "signed out" step, if any
            response = session.get(url, allow_redirects=False, verify=verify, timeout=10)
            if not response.is_redirect:
                return url
            url = urljoin(url, response.headers["location"])
        return url


class _FormFinder(HTMLParser):
    """The action and hidden inputs of the form with a given id (our login form, the logout form)."""

    def __init__(self, form_id: str) -> None:
        super().__init__()
        self.form_id = form_id
        self.action: str | None = None
        self.hidden: dict[str, str] = {}
        self._inside = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        if tag == "form":
            self._inside = values.get("id") == self.form_id
            if self._inside:
                self.action = values.get("action")
        elif tag == "input" and self._inside and values.get("type") == "hidden":
            self.hidden[values.get("name") or ""] = values.get("value") or ""

    def handle_endtag(self, tag: str) -> None:
        if tag == "form":
            self._inside = False


def _find_form(html: str, form_id: str) -> _FormFinder:
    finder = _FormFinder(form_id)
    finder.feed(html)
    return finder


@dataclass(frozen=True)
class Pkce:
    """A PKCE S256 verifier and its challenge (RFC 7636)."""

    verifier: str = field(default_factory=lambda: secrets.token_urlsafe(48))

    @property
    def challenge(self) -> str:
        return b64url(hashlib.sha256(self.verifier.encode("ascii")).digest())


def authorize_url(provider: OidcProvider, client_id: str, redirect_uri: str, pkce: Pkce, *, state: str,
                  nonce: str, scope: str = "openid profile email groups") -> str:
    """The authorization request a relying party would redirect a browser to."""
    query = urlencode({"response_type": "code", "client_id": client_id, "redirect_uri": redirect_uri,
                       "scope": scope, "state": state, "nonce": nonce, "code_challenge": pkce.challenge,
                       "code_challenge_method": "S256"})
    return f"{provider.discovery()['authorization_endpoint']}?{query}"


def callback_params(url: str) -> dict[str, str]:
    """The query parameters of the IdP's redirect back to the relying party (code, state, iss...)."""
    return {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}


def provider_fixture(name: str, *, scope: Literal["session", "package", "module", "class", "function"] = "module",
                     **options: Any) -> Any:
    """A pytest fixture named ``name`` yielding a started ``OidcProvider(name=name, **options)``,
    destroyed after its scope. In a test module or conftest: ``idp = provider_fixture("idp")``."""

    @pytest.fixture(name=name, scope=scope)
    def _fixture() -> Iterator[OidcProvider]:
        provider = OidcProvider(name=name, **options)
        try:
            yield provider.start()
        finally:
            provider.destroy()

    return _fixture
