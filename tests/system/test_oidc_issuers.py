"""Verifying tokens of configured OpenID Connect issuers against a REAL provider.

panva's oidc-provider (tests/oidc_fixture.py) issues the tokens and serves discovery and the
JWKS over HTTPS from its test CA; the scheduler's side is read from a real scheduler.conf
(``[oidc.NAME]`` sections) and exercised through ``luigi-appliance oidc explain|test`` and
``Issuers.verify_subject_token`` itself. The tokens a real IdP would not issue (expired, for
another issuer, alg none, HS256 keyed with the public key, an unpublished kid) are made by the
fixture with the IdP's own key, or forged here as an attacker would.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import secrets
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jwt
import pytest
import requests
from oidc_fixture import MANY_GROUPS, OidcClient, OidcProvider, b64url, jwt_parts, provider_fixture, resource_for
from test_oidc_provider_fixture import REDIRECT, code_login

from conftest import cli, write_config
from luigi_appliance.auth import Role
from luigi_appliance.auth.oidc import Refusal, TokenRefused, VerifiedToken
from luigi_appliance.auth.oidc.issuers import Issuers, issuers_for
from luigi_appliance.config_loader import load_settings

AUDIENCE = "luigi-sched"

idp = provider_fixture("idp", audiences=(AUDIENCE, "another-api"))
partner = provider_fixture("partner", audiences=(AUDIENCE,))
rotating = provider_fixture("rotating", audiences=(AUDIENCE,))


def scheduler_conf(tmp_path: Path, sections: str) -> Path:
    users = tmp_path / "users"
    users.write_text("")
    return write_config(tmp_path / "scheduler.conf", f"""
[auth]
users_file = {users}
[secrets]
key_file = {tmp_path / 'secret.key'}
{sections}
""")


def corp_section(provider: OidcProvider, extra: str = "") -> str:
    return f"""
[oidc.corp]
issuer = {provider.issuer}
ca_file = {provider.ca_file}
token_exchange = true
audience = {AUDIENCE}
roles = claim:client_id=luigi-appliance -> worker; group:luigi-viewers -> viewer; group:luigi-admins -> admin
{extra}
"""


def issuers(conf: Path) -> Issuers:
    found = issuers_for(load_settings([conf]))
    assert found is not None
    return found


def claims_for(provider: OidcProvider, **overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    return {"iss": provider.issuer, "aud": AUDIENCE, "sub": "robot", "client_id": "luigi-appliance",
            "iat": now, "exp": now + 300, "jti": secrets.token_urlsafe(8), **overrides}


def refusal(verify: Callable[[], Any]) -> TokenRefused:
    with pytest.raises(TokenRefused) as caught:
        asyncio.run(verify())
    return caught.value


def explain(conf: Path, token: str) -> Any:
    return cli("--config", str(conf), "oidc", "explain", "-", input=token + "\n")


def test_a_client_credentials_token_verifies_and_maps_to_its_role(idp: OidcProvider, tmp_path: Path) -> None:
    conf = scheduler_conf(tmp_path, corp_section(idp))
    token = idp.client_credentials_token(AUDIENCE)

    verified: VerifiedToken = asyncio.run(issuers(conf).verify_subject_token(token))
    assert verified.issuer == "corp" and verified.claims["aud"] == AUDIENCE
    p = verified.principal
    assert (p.name, p.role, p.backend, p.families) == ("luigi-appliance", Role.WORKER, "oidc:corp", None)

    result = explain(conf, token)
    assert result.returncode == 0, result.stderr
    assert f"verified: a token of issuer corp ({idp.issuer}), aud {AUDIENCE}, sub luigi-appliance" in result.stdout
    assert ("[oidc.corp] roles: claim:client_id=luigi-appliance -> worker    "
            "(claim client_id is 'luigi-appliance')") in result.stdout
    assert "role: worker\ntask families: unrestricted" in result.stdout
    assert token not in result.stdout + result.stderr


def _none_token(claims: dict[str, Any]) -> str:
    head = b64url(json.dumps({"alg": "none", "typ": "JWT"}).encode())
    return f"{head}.{b64url(json.dumps(claims).encode())}."


def _hs256_with_public_key(provider: OidcProvider, claims: dict[str, Any]) -> str:
    """The classic forgery: an HMAC keyed with the issuer's PUBLIC key, which anybody can fetch."""
    head = b64url(json.dumps({"alg": "HS256", "typ": "JWT", "kid": provider.signing_kid}).encode())
    body = b64url(json.dumps(claims).encode())
    mac = hmac.new(provider.public_key_pem(), f"{head}.{body}".encode(), hashlib.sha256).digest()
    return f"{head}.{body}.{b64url(mac)}"


def test_tokens_that_must_fail_each_with_its_refusal(idp: OidcProvider, tmp_path: Path) -> None:
    conf = scheduler_conf(tmp_path, corp_section(idp))
    verifier = issuers(conf)
    now = int(time.time())
    good = idp.client_credentials_token(AUDIENCE)
    head, _body, signature = good.split(".")
    tampered_body = b64url(json.dumps({**jwt_parts(good)[1], "client_id": "admin-robot"}).encode())
    cases = {
        "expired": (idp.sign_jwt(claims_for(idp, iat=now - 900, exp=now - 120)), Refusal.EXPIRED),
        "not yet valid": (idp.sign_jwt(claims_for(idp, nbf=now + 600)), Refusal.NOT_YET_VALID),
        "issued in the future": (idp.sign_jwt(claims_for(idp, iat=now + 600, exp=now + 900)), Refusal.NOT_YET_VALID),
        "wrong audience (a real token for another API)": (idp.client_credentials_token("another-api"),
                                                          Refusal.WRONG_AUDIENCE),
        "no audience": (idp.sign_jwt({k: v for k, v in claims_for(idp).items() if k != "aud"}),
                        Refusal.WRONG_AUDIENCE),
        "wrong issuer": (idp.sign_jwt(claims_for(idp, iss="https://evil.example.test")), Refusal.UNKNOWN_ISSUER),
        "alg none": (_none_token(claims_for(idp)), Refusal.BAD_ALGORITHM),
        "HS256 keyed with the RSA public key": (_hs256_with_public_key(idp, claims_for(idp)), Refusal.BAD_ALGORITHM),
        "a kid not in the JWKS": (idp.sign_jwt(claims_for(idp), header={"kid": "not-published"}),
                                  Refusal.UNKNOWN_KEY),
        "a claim changed after signing": (f"{head}.{tampered_body}.{signature}", Refusal.BAD_SIGNATURE),
        "no exp": (idp.sign_jwt({k: v for k, v in claims_for(idp).items() if k != "exp"}), Refusal.MALFORMED),
        "not a JWT": ("not-a-token", Refusal.MALFORMED),
        "verified, but no rule gives a role": (idp.sign_jwt(claims_for(idp, client_id="stranger")), Refusal.NO_ROLE),
    }

    async def verify_all() -> dict[str, Refusal | str]:
        found: dict[str, Refusal | str] = {}
        for what, (token, _expected) in cases.items():
            try:
                await verifier.verify_subject_token(token)
                found[what] = "accepted"
            except TokenRefused as exc:
                found[what] = exc.reason
        return found

    assert asyncio.run(verify_all()) == {what: expected for what, (_token, expected) in cases.items()}

    result = explain(conf, cases["expired"][0])
    assert result.returncode == 1 and result.stdout == ""
    assert result.stderr.startswith("luigi-appliance: error: refused (expired): token refused: Signature has expired")
    assert len(result.stderr.strip().splitlines()) == 1


def test_pyjwt_itself_refuses_an_rsa_public_key_as_an_hmac_secret(idp: OidcProvider) -> None:
    """Defence in depth under the allowlist: even asked for HS256, PyJWT will not use the PEM."""
    forged = _hs256_with_public_key(idp, claims_for(idp))
    with pytest.raises(jwt.InvalidKeyError, match="asymmetric key"):
        jwt.decode(forged, idp.public_key_pem(), algorithms=["HS256"], audience=AUDIENCE)


def test_two_issuers_where_only_the_first_accepts_token_exchange(idp: OidcProvider, partner: OidcProvider,
                                                                 tmp_path: Path) -> None:
    conf = scheduler_conf(tmp_path, corp_section(idp) + f"""
[oidc.partner]
issuer = {partner.issuer}
ca_file = {partner.ca_file}
audience = {AUDIENCE}
roles = issuer:partner -> viewer
""")
    verifier = issuers(conf)
    assert verifier.names() == ("corp", "partner")
    theirs = partner.client_credentials_token(AUDIENCE)
    refused = refusal(lambda: verifier.verify_subject_token(theirs))
    assert refused.reason == Refusal.UNKNOWN_ISSUER
    assert "issuer partner does not accept token exchange" in str(refused)
    # The first issuer's tokens are still taken, by the first issuer only.
    ours = asyncio.run(verifier.verify_subject_token(idp.client_credentials_token(AUDIENCE)))
    assert ours.principal.backend == "oidc:corp"
    # A token of the second issuer signed by the first issuer's key is no token of either.
    impostor = idp.sign_jwt(claims_for(partner))
    assert refusal(lambda: issuers(conf).issuer("partner").verify(impostor, (AUDIENCE,))).reason in (
        Refusal.UNKNOWN_KEY, Refusal.BAD_SIGNATURE)

    # Both are configured at once: explain verifies the second issuer's token as its own.
    result = explain(conf, theirs)
    assert result.returncode == 0, result.stderr
    assert "verified: a token of issuer partner" in result.stdout
    assert "[oidc.partner] roles: issuer:partner -> viewer    (the token is from issuer partner)" in result.stdout
    assert "role: viewer" in result.stdout


def test_a_rotated_key_is_fetched_once_and_refetching_is_rate_limited(rotating: OidcProvider,
                                                                      tmp_path: Path) -> None:
    conf = scheduler_conf(tmp_path, corp_section(rotating))
    verifier = issuers(conf)
    keys = verifier.issuer("corp").keys
    old_token = rotating.client_credentials_token(AUDIENCE)

    async def scenario() -> None:
        await verifier.verify_subject_token(old_token)
        assert keys.fetches == 1
        await verifier.verify_subject_token(old_token)
        assert keys.fetches == 1, "a known kid is served from the cache"

        new_kid = rotating.rotate_keys()
        new_token = rotating.client_credentials_token(AUDIENCE)
        assert jwt_parts(new_token)[0]["kid"] == new_kid
        verified = await verifier.verify_subject_token(new_token)
        assert verified.principal.role == Role.WORKER and keys.fetches == 2, "the unknown kid refetched once"
        await verifier.verify_subject_token(old_token)  # the old key is still published
        assert keys.fetches == 2

        # A second rotation within jwks_refetch_interval (60 s): the new kid is not fetched, nor
        # is a made-up one: tokens naming unknown kids cannot make us hammer the issuer.
        rotating.rotate_keys()
        for token in (rotating.client_credentials_token(AUDIENCE),
                      rotating.sign_jwt(claims_for(rotating), header={"kid": "made-up"})):
            with pytest.raises(TokenRefused) as caught:
                await verifier.verify_subject_token(token)
            assert caught.value.reason == Refusal.UNKNOWN_KEY
        assert keys.fetches == 2

    asyncio.run(scenario())


def test_a_user_in_300_groups_maps_fine(idp: OidcProvider, tmp_path: Path) -> None:
    conf = scheduler_conf(tmp_path, corp_section(idp, "client_id = luigi-web"))
    many = idp.user("many")
    token = idp.sign_jwt(claims_for(idp, sub="many", client_id="luigi-web", **many.claims()))
    assert len(token) > 4096
    verified = asyncio.run(issuers(conf).verify_subject_token(token))
    assert verified.principal.name == "many" and verified.principal.role == Role.VIEWER
    assert verified.principal.groups == frozenset((*MANY_GROUPS, "luigi-viewers"))

    # The IdP's own ID token for the user, through its login page, as the browser login gets it.
    idp.set_client(OidcClient("luigi-web", redirect_uris=(REDIRECT,)))
    id_token = code_login(idp, "luigi-web", "many")["id_token"]
    nonce = jwt_parts(id_token)[1]["nonce"]
    issuer = issuers(conf).issuer("corp")
    from_login = asyncio.run(issuer.verify_id_token(id_token, nonce=nonce))
    assert from_login.principal.name == "many" and from_login.principal.role == Role.VIEWER
    assert len(from_login.principal.groups) == 301
    assert refusal(lambda: issuers(conf).issuer("corp").verify_id_token(id_token, nonce="another")).reason == (
        Refusal.BAD_NONCE)


def test_every_matching_rule_contributes(idp: OidcProvider, tmp_path: Path) -> None:
    conf = scheduler_conf(tmp_path, f"""
[oidc.corp]
issuer = {idp.issuer}
ca_file = {idp.ca_file}
token_exchange = true
audience = {AUDIENCE}
roles = group:etl -> viewer; claim:repository_owner=acme -> worker; group:other -> admin
families = group:etl -> Etl*; group:reports -> Report* Daily*; issuer:corp -> Shared*; group:other -> Secret*
""")
    token = idp.sign_jwt(claims_for(idp, sub="repo:acme/pipelines:ref:refs/heads/main", repository_owner="acme",
                                    groups=["etl", "reports"], preferred_username="ci-acme"))
    verified = asyncio.run(issuers(conf).verify_subject_token(token))
    assert verified.principal.role == Role.WORKER  # the highest of viewer and worker
    assert verified.principal.families == ("Etl*", "Report*", "Daily*", "Shared*")  # the union

    result = explain(conf, token)
    assert result.returncode == 0, result.stderr
    matched = [line.strip() for line in result.stdout.splitlines() if line.startswith("  [oidc.corp]")]
    assert matched == [
        "[oidc.corp] roles: group:etl -> viewer    ('etl' is among the 2 groups)",
        "[oidc.corp] roles: claim:repository_owner=acme -> worker    (claim repository_owner is 'acme')",
        "[oidc.corp] families: group:etl -> Etl*    ('etl' is among the 2 groups)",
        "[oidc.corp] families: group:reports -> Report* Daily*    ('reports' is among the 2 groups)",
        "[oidc.corp] families: issuer:corp -> Shared*    (the token is from issuer corp)",
    ]
    assert "user name: ci-acme" in result.stdout
    assert "role: worker\ntask families: Etl* Report* Daily* Shared*" in result.stdout


def test_oidc_test_shows_discovery_and_keys_and_names_the_url_that_fails(idp: OidcProvider, partner: OidcProvider,
                                                                        tmp_path: Path) -> None:
    conf = scheduler_conf(tmp_path, corp_section(idp))
    result = cli("--config", str(conf), "oidc", "test", "--issuer", "corp")
    assert result.returncode == 0, result.stderr
    assert f"issuer corp: {idp.issuer}\n" in result.stdout
    assert f"jwks_uri: {idp.issuer}/jwks" in result.stdout
    assert f"token_endpoint: {idp.issuer}/token" in result.stdout
    assert f"kid {idp.signing_kid}: RSA RS256; verifies RS256\n" in result.stdout

    # The issuer's certificate does not chain to ca_file (another IdP's CA): one line, the URL.
    wrong_ca = scheduler_conf(tmp_path, corp_section(idp).replace(str(idp.ca_file), str(partner.ca_file)))
    result = cli("--config", str(wrong_ca), "oidc", "test", "--issuer", "corp")
    assert result.returncode == 1 and result.stdout == ""
    assert result.stderr.startswith(f"luigi-appliance: error: refused (issuer_unavailable): cannot use "
                                    f"{idp.issuer}/.well-known/openid-configuration: TLS certificate not trusted (")
    assert result.stderr.endswith("); check ca_file\n") and len(result.stderr.splitlines()) == 1

    # Nothing listens there.
    closed = scheduler_conf(tmp_path, corp_section(idp).replace(idp.issuer, "https://127.0.0.1:9"))
    result = cli("--config", str(closed), "oidc", "test", "--issuer", "corp")
    assert result.returncode == 1
    assert result.stderr.startswith("luigi-appliance: error: refused (issuer_unavailable): cannot use "
                                    "https://127.0.0.1:9/.well-known/openid-configuration: ")
    assert len(result.stderr.splitlines()) == 1

    result = cli("--config", str(conf), "oidc", "test", "--issuer", "nope")
    assert result.returncode == 1
    assert result.stderr == "luigi-appliance: error: no [oidc.nope] section; configured: corp\n"


def test_discovery_naming_another_issuer_is_refused(idp: OidcProvider, tmp_path: Path) -> None:
    # The same server under another spelling of its URL: the document's issuer must match exactly.
    other_spelling = idp.issuer + "/"
    conf = scheduler_conf(tmp_path, corp_section(idp).replace(f"issuer = {idp.issuer}\n",
                                                              f"issuer = {other_spelling}\n"))
    result = cli("--config", str(conf), "oidc", "test", "--issuer", "corp")
    assert result.returncode == 1
    assert f"the discovery document names issuer '{idp.issuer}', not the configured '{other_spelling}'" in result.stderr


def test_config_check_reports_an_unusable_ca_file_and_secret_file_at_their_lines(idp: OidcProvider,
                                                                                tmp_path: Path) -> None:
    not_pem = tmp_path / "not-a-ca.pem"
    not_pem.write_text("hello\n")
    secret = tmp_path / "client.secret"
    secret.write_text("s3cret\n")
    secret.chmod(0o644)
    conf = scheduler_conf(tmp_path, f"""
[oidc.corp]
issuer = {idp.issuer}
ca_file = {not_pem}
browser_login = true
client_id = luigi-web
client_secret_file = {secret}
""")
    text = conf.read_text().splitlines()
    line_of = {key: text.index(next(t for t in text if t.startswith(key))) + 1
               for key in ("ca_file", "client_secret_file")}
    result = cli("--config", str(conf), "config", "check")
    assert result.returncode == 1
    assert (f"{conf}:{line_of['client_secret_file']}: [oidc.corp] client_secret_file: secret file {secret} "
            f"has mode 0644") in result.stderr
    secret.chmod(0o600)
    result = cli("--config", str(conf), "config", "check")
    assert result.returncode == 1
    assert (f"{conf}:{line_of['ca_file']}: [oidc.corp] ca_file: {not_pem} holds no PEM certificate"
            in result.stderr), result.stderr


def test_a_silent_issuer_does_not_stall_the_scheduler(configured_server: Any, idp: OidcProvider) -> None:
    """The scheduler has one IOLoop: while a request to an issuer waits for its answer (here a
    listener that never speaks TLS), every other call is still answered at once."""
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)  # connections complete in the kernel's backlog; nothing ever answers them
    issuer = f"https://127.0.0.1:{silent.getsockname()[1]}"
    try:
        server = configured_server(f"""
[oidc.silent]
issuer = {issuer}
token_exchange = true
audience = {AUDIENCE}
timeout = 4
roles = issuer:silent -> worker
""")
        token = idp.sign_jwt(claims_for(idp, iss=issuer))
        answered: dict[str, Any] = {}

        def exchange() -> None:
            started = time.monotonic()
            answered["response"] = requests.post(
                f"{server.url}/auth/token", verify=str(server.ca_file), timeout=30,
                data={"grant_type": "urn:ietf:params:oauth:grant-type:token-exchange", "subject_token": token,
                      "subject_token_type": "urn:ietf:params:oauth:token-type:jwt"})
            answered["seconds"] = time.monotonic() - started

        waiting = threading.Thread(target=exchange)
        waiting.start()
        time.sleep(0.5)  # the exchange is now waiting for the issuer
        latencies = []
        while waiting.is_alive() and len(latencies) < 20:
            started = time.monotonic()
            assert requests.get(f"{server.url}/healthz", verify=str(server.ca_file), timeout=5).status_code == 200
            latencies.append(time.monotonic() - started)
            time.sleep(0.1)
        waiting.join()
        assert answered["seconds"] >= 3.5, "the exchange did wait for the silent issuer"
        assert len(latencies) >= 10 and max(latencies) < 0.5, latencies
        assert "issuer_unavailable" in answered["response"].text and token not in answered["response"].text
    finally:
        silent.close()


def test_the_token_endpoint_with_either_client_authentication(idp: OidcProvider, tmp_path: Path) -> None:
    """IssuerClient.token_request as the browser login uses it, here with a client-credentials
    grant: client_secret_basic from a secret file, and private_key_jwt from a key file."""
    robot = idp.set_client(OidcClient("etl-robot", grant_types=("client_credentials",), auth="private_key_jwt"))
    basic = idp.client("luigi-appliance")
    assert basic.secret_file is not None and robot.private_key_file is not None
    conf = scheduler_conf(tmp_path, corp_section(idp, f"""client_id = luigi-appliance
client_secret_file = {basic.secret_file}
[oidc.robot]
issuer = {idp.issuer}
ca_file = {idp.ca_file}
client_id = etl-robot
client_auth = private_key_jwt
private_key_file = {robot.private_key_file}
private_key_id = {robot.key_id}
audience = {AUDIENCE}
"""))
    grant = {"grant_type": "client_credentials", "resource": resource_for(AUDIENCE)}

    async def scenario() -> list[str]:
        verifier = issuers(conf)
        subjects = []
        for name in ("corp", "robot"):
            answer = await verifier.issuer(name).token_request(grant)
            claims = jwt_parts(answer["access_token"])[1]
            subjects.append(claims["sub"])
        return subjects

    assert asyncio.run(scenario()) == ["luigi-appliance", "etl-robot"]

    basic.secret_file.write_text("not-the-secret\n")
    try:
        refused = refusal(lambda: issuers(conf).issuer("corp").token_request(grant))
    finally:
        basic.secret_file.write_text(f"{basic.secret}\n")
    assert refused.reason == Refusal.MALFORMED
    assert str(refused) == f"the token endpoint {idp.issuer}/token answered HTTP 401 invalid_client"
