"""The ``[oidc.NAME]`` sections: one per OpenID Connect issuer, several at once."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from luigi_appliance.auth.oidc.claims import FamilyRule, RoleRule, parse_family_rules, parse_role_rules
from luigi_appliance.settings.declare import key, secret
from luigi_appliance.settings.issues import ConfigIssue
from luigi_appliance.settings.loader import SchemaLoader, section_family
from luigi_appliance.settings.parsers import choice, duration_range, parse_bool, parse_path, split_list

# Asymmetric algorithms only: an HMAC "signature" would be checked with a key the issuer
# publishes (the JWKS), which anybody can then forge; "none" is no signature at all.
SUPPORTED_ALGORITHMS = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA")
DEFAULT_ALGORITHMS = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512")


def parse_issuer_url(value: str) -> str:
    """An https URL without query or fragment, kept exactly as written (``iss`` compares exactly)."""
    parts = urlsplit(value)
    if parts.scheme != "https" or not parts.hostname or parts.query or parts.fragment:
        raise ValueError(f"expected the issuer's https URL (e.g. https://idp.example.org/realms/acme), "
                         f"got {value!r}")
    return value


def parse_algorithms(value: str) -> tuple[str, ...]:
    """Signing algorithms accepted from this issuer; ``none`` and HS* are refused."""
    algorithms = split_list(value)
    by_name = {a.lower(): a for a in SUPPORTED_ALGORITHMS}
    for alg in algorithms:
        if alg.lower() == "none" or alg.upper().startswith("HS"):
            raise ValueError(f"{alg} is not accepted: a token's signature must be checked with the issuer's "
                             f"public key (use e.g. RS256 or ES256)")
        if alg.lower() not in by_name:
            raise ValueError(f"expected signing algorithms among {', '.join(SUPPORTED_ALGORITHMS)}, got {alg!r}")
    if not algorithms:
        raise ValueError("expected one or more signing algorithms such as RS256 ES256")
    return tuple(dict.fromkeys(by_name[a.lower()] for a in algorithms))


def parse_nonempty_list(value: str) -> tuple[str, ...]:
    items = split_list(value)
    if not items:
        raise ValueError("expected one or more values separated by blanks or commas")
    return items


def parse_text(value: str) -> str:
    if not value or any(ch.isspace() for ch in value):
        raise ValueError(f"expected a value without blanks, got {value!r}")
    return value


@dataclass(frozen=True)
class OidcIssuerSettings:
    """One ``[oidc.NAME]`` section."""

    issuer: str | None = key(parse_issuer_url, None, "the issuer URL (https), exactly as its discovery "
                             "document's issuer; required")
    token_exchange: bool = key(parse_bool, False, "accept this issuer's JWTs at POST /auth/token "
                               "(RFC 8693 token exchange); needs audience")
    browser_login: bool = key(parse_bool, False, "offer \"Sign in with NAME\" on the login page; "
                              "needs client_id and the client's credentials")
    audience: tuple[str, ...] = key(parse_nonempty_list, (), "the aud a token-exchange subject token must carry "
                                    "(one of these values)")
    client_id: str | None = key(parse_text, None, "this scheduler's client id at the issuer (browser login)")
    client_auth: str = key(choice("client_secret_basic", "private_key_jwt"), "client_secret_basic",
                           "how the client authenticates at the token endpoint")
    client_secret: bytes | None = secret("the client secret (client_auth = client_secret_basic)")
    client_secret_file: Path | None = None
    private_key_file: Path | None = key(parse_path, None, "PEM private key signing the client assertion "
                                        "(client_auth = private_key_jwt); a secret file", must_exist=True)
    private_key_id: str | None = key(parse_text, None, "the kid of that key as registered at the issuer")
    scopes: tuple[str, ...] = key(parse_nonempty_list, ("openid", "profile", "email"),
                                  "scopes asked for at browser login")
    algorithms: tuple[str, ...] = key(parse_algorithms, DEFAULT_ALGORITHMS,
                                      "signing algorithms accepted (none and HS* are refused)")
    clock_skew: float = key(duration_range(0, 300), 60.0, "tolerance for exp, nbf and iat")
    ca_file: Path | None = key(parse_path, None, "PEM CA certificates the issuer's TLS certificate is verified "
                               "with, host name included (unset: the system's)", must_exist=True)
    username_claim: tuple[str, ...] = key(parse_nonempty_list, ("preferred_username", "sub"),
                                          "the claims the user name is taken from, the first present")
    groups_claim: tuple[str, ...] = key(parse_nonempty_list, ("groups",),
                                        "the claims holding the identity's groups")
    roles: tuple[RoleRule, ...] = key(parse_role_rules, (), "rules MATCH -> ROLE separated by ;, every match "
                                      "contributing, the highest role winning (docs/oidc.md)")
    families: tuple[FamilyRule, ...] = key(parse_family_rules, (), "rules MATCH -> PATTERNS separated by ;, "
                                           "the union of every match (unset: unrestricted)")
    cache_ttl: float = key(duration_range(1, 86400), 3600.0, "how long discovery and the JWKS are kept before "
                           "they are fetched again")
    jwks_refetch_interval: float = key(duration_range(1, 3600), 60.0,
                                       "an unknown kid refetches the JWKS at most this often")
    timeout: float = key(duration_range(1, 120), 10.0, "how long a request to the issuer may take")


def _check_issuers(loader: SchemaLoader) -> None:
    """What a section needs for what it accepts; two exchange issuers with one iss are ambiguous."""
    exchanging: dict[str, str] = {}
    for name in loader.members(OIDC):
        section = f"oidc.{name}"
        v = {k.name: loader.values.get((section, k.name)) for k in OIDC.keys}
        file, line = loader.doc.sections[section]

        def issue(key_name: str, message: str, section: str = section, file: str = file, line: int = line) -> None:
            entry = loader.doc.get(section, key_name)
            loader.issues.append(ConfigIssue(entry.file if entry else file, entry.line if entry else line,
                                             section, key_name, message))

        if v["issuer"] is None:
            if (section, "issuer") in loader.values:  # absent, not invalid
                issue("issuer", f"[{section}] needs issuer = https://... (the issuer URL)")
            continue
        if v["token_exchange"] and not v["audience"]:
            issue("audience", "token_exchange = true needs audience: the aud this scheduler's subject tokens carry")
        if v["token_exchange"]:
            other = exchanging.setdefault(v["issuer"], name)
            if other != name:
                issue("issuer", f"[oidc.{other}] accepts token exchange for the same issuer URL; keep one")
        if v["browser_login"] and not v["client_id"]:
            issue("client_id", "browser_login = true needs client_id")
        has_secret = (loader.values.get((section, "client_secret")) is not None
                      or loader.values.get((section, "client_secret_file")) is not None)
        if v["client_auth"] == "private_key_jwt":
            if has_secret:
                issue("client_secret", "client_auth = private_key_jwt uses private_key_file; remove the client secret")
            elif v["browser_login"] and v["private_key_file"] is None:
                issue("private_key_file", "client_auth = private_key_jwt needs private_key_file")
        elif v["private_key_file"] is not None:
            issue("private_key_file", "private_key_file is used with client_auth = private_key_jwt only")
        elif v["browser_login"] and not has_secret:
            issue("client_secret", "browser_login with client_auth = client_secret_basic needs "
                  "client_secret_file = PATH or client_secret = enc:...")
        for rule in (*(v["roles"] or ()), *(v["families"] or ())):
            if rule.match.kind == "issuer" and rule.match.name != name:
                issue("roles" if isinstance(rule, RoleRule) else "families",
                      f"{rule.match} in [{section}]: an issuer's rules match its own tokens only; "
                      f"write issuer:{name} or move the rule to [oidc.{rule.match.name}]")


OIDC = section_family("oidc", OidcIssuerSettings, _check_issuers)
