"""The OpenID Provider the OIDC tests run against is real: panva's oidc-provider under Node
(tests/oidc_fixture.py, tests/oidc_provider/), over HTTPS from a test CA, on loopback.

These tests speak the protocol from Python (requests + cryptography) as a relying party would:
discovery, client credentials with a resource indicator (a JWT access token), code flow with PKCE
through the IdP's own login page, refresh-token rotation, key rotation without a restart,
RP-initiated logout with a back-channel logout token POSTed to a real HTTPS endpoint, and two
issuers at once. The scheduler's own OIDC support is tested elsewhere, against this fixture.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode

import pytest
import requests
from cryptography.exceptions import InvalidSignature
from oidc_fixture import (
    PROVIDER_DIR,
    OidcClient,
    OidcProvider,
    Pkce,
    authorize_url,
    b64url,
    callback_params,
    jwt_parts,
    provider_fixture,
    verify_rs256,
    write_test_ca,
)
from test_visualiser_browser import DevTools

REDIRECT = "https://127.0.0.1:9/oidc/callback"  # never contacted: login() stops at the redirect
NODE_START_BUDGET = 15.0  # seconds from `node provider.mjs` to a served discovery document (1.5 s idle)

idp = provider_fixture("idp")


def code_login(provider: OidcProvider, client_id: str, username: str,
               session: requests.Session | None = None) -> dict[str, Any]:
    """The whole code + PKCE flow for ``username``: the token endpoint's answer, ID token verified."""
    session = session or requests.Session()
    pkce, state, nonce = Pkce(), secrets.token_urlsafe(16), secrets.token_urlsafe(16)
    back = provider.login(session, authorize_url(provider, client_id, REDIRECT, pkce, state=state, nonce=nonce),
                          username)
    assert back.startswith(REDIRECT + "?"), back
    params = callback_params(back)
    assert params["state"] == state and params["iss"] == provider.issuer, params
    response = provider.token_request(client_id, {"grant_type": "authorization_code", "code": params["code"],
                                                  "redirect_uri": REDIRECT, "code_verifier": pkce.verifier})
    assert response.status_code == 200, response.text
    tokens = response.json()
    claims = verify_rs256(tokens["id_token"], provider.jwks())
    assert claims["nonce"] == nonce and claims["aud"] == client_id and claims["iss"] == provider.issuer
    return tokens


def test_discovery_is_served_over_tls_from_the_test_ca(idp: OidcProvider) -> None:
    assert idp.startup_seconds < NODE_START_BUDGET, f"node took {idp.startup_seconds:.2f}s to serve discovery"
    doc = idp.discovery()
    assert doc["issuer"] == idp.issuer
    assert doc["code_challenge_methods_supported"] == ["S256"]
    assert doc["response_types_supported"] == ["code"]
    assert {"authorization_code", "refresh_token", "client_credentials"} <= set(doc["grant_types_supported"])
    assert doc["end_session_endpoint"] == f"{idp.issuer}/session/end"
    assert doc["backchannel_logout_supported"] is True and doc["backchannel_logout_session_supported"] is True
    assert doc["id_token_signing_alg_values_supported"] == ["RS256"]
    assert {"groups", "preferred_username", "email"} <= set(doc["claims_supported"])
    # The certificate chains to the test CA only, not to the system's trust store.
    with pytest.raises(requests.exceptions.SSLError):
        requests.get(f"{idp.issuer}/.well-known/openid-configuration", timeout=10)


def test_client_credentials_token_is_a_jwt_for_the_chosen_audience(idp: OidcProvider) -> None:
    token = idp.client_credentials_token("luigi-appliance")
    header, _ = jwt_parts(token)
    assert header == {"alg": "RS256", "typ": "at+jwt", "kid": idp.signing_kid}
    claims = verify_rs256(token, idp.jwks())
    assert claims["aud"] == "luigi-appliance" and claims["iss"] == idp.issuer
    assert claims["sub"] == claims["client_id"] == "luigi-appliance"
    assert claims["exp"] - claims["iat"] == 600 and abs(claims["iat"] - time.time()) < 60 and claims["jti"]

    other = verify_rs256(idp.client_credentials_token("https://other-api.example.test/"), idp.jwks())
    assert other["aud"] == "https://other-api.example.test/"

    head, _body, signature = token.split(".")
    forged = b64url(json.dumps({**claims, "aud": "something-else"}).encode())
    with pytest.raises(InvalidSignature):
        verify_rs256(f"{head}.{forged}.{signature}", idp.jwks())

    refused = requests.post(idp.discovery()["token_endpoint"], verify=str(idp.ca_file), timeout=10,
                            data={"grant_type": "client_credentials"}, auth=("luigi-appliance", "wrong-secret"))
    assert refused.status_code == 401 and refused.json()["error"] == "invalid_client"


def test_private_key_jwt_client_gets_a_token(idp: OidcProvider) -> None:
    creds = idp.set_client(OidcClient("etl-robot", grant_types=("client_credentials",), auth="private_key_jwt"))
    assert creds.secret is None and creds.private_key_file is not None
    assert creds.private_key_file.stat().st_mode & 0o077 == 0
    claims = verify_rs256(idp.client_credentials_token("luigi-appliance", "etl-robot"), idp.jwks())
    assert claims["sub"] == "etl-robot" and claims["aud"] == "luigi-appliance"


def test_key_rotation_publishes_a_new_kid_and_signs_with_it(idp: OidcProvider) -> None:
    pid = idp._proc.pid if idp._proc else None
    old_kid = idp.signing_kid
    old_token = idp.client_credentials_token("luigi-appliance")

    new_kid = idp.rotate_keys()
    assert new_kid != old_kid and [k["kid"] for k in idp.jwks()["keys"]] == [new_kid, old_kid]
    new_token = idp.client_credentials_token("luigi-appliance")
    assert jwt_parts(new_token)[0]["kid"] == new_kid
    verify_rs256(new_token, idp.jwks())
    verify_rs256(old_token, idp.jwks())  # still published: still verifies
    # The fixture signs what the IdP would not issue (here: expired) with the IdP's own current key.
    expired = idp.sign_jwt({"iss": idp.issuer, "aud": "luigi-appliance", "sub": "x", "exp": int(time.time()) - 60})
    assert jwt_parts(expired)[0] == {"alg": "RS256", "typ": "JWT", "kid": new_kid}
    assert verify_rs256(expired, idp.jwks())["exp"] < time.time()
    assert idp.public_key_pem(old_kid).startswith(b"-----BEGIN PUBLIC KEY-----")

    idp.remove_key(old_kid)
    assert [k["kid"] for k in idp.jwks()["keys"]] == [new_kid]
    with pytest.raises(KeyError):
        verify_rs256(old_token, idp.jwks())
    assert idp._proc is not None and idp._proc.pid == pid, "rotation must not restart the provider"


def test_code_flow_with_pkce_through_the_login_page(idp: OidcProvider) -> None:
    idp.set_client(OidcClient("web", redirect_uris=(REDIRECT,)))
    tokens = code_login(idp, "web", "alice")
    claims = jwt_parts(tokens["id_token"])[1]
    assert claims["sub"] == claims["preferred_username"] == "alice"
    assert claims["groups"] == ["luigi-admins"] and claims["email"] == "alice@example.test"
    assert tokens["token_type"] == "Bearer" and tokens["refresh_token"] and tokens["access_token"]
    assert "sid" not in claims  # only for clients registered for back-channel logout

    # A wrong password gets the form again, with an error, and no redirect.
    session, pkce = requests.Session(), Pkce()
    url = authorize_url(idp, "web", REDIRECT, pkce, state="s", nonce="n")
    with pytest.raises(AssertionError, match="login as alice refused"):
        idp.login(session, url, "alice", "not-her-password")

    # PKCE is required, and the verifier must match.
    base, query = url.split("?", 1)
    without = {k: v[0] for k, v in parse_qs(query).items() if not k.startswith("code_challenge")}
    no_pkce = requests.get(f"{base}?{urlencode(without)}", allow_redirects=False, verify=str(idp.ca_file),
                           timeout=10)
    assert no_pkce.is_redirect, no_pkce.text
    error = callback_params(no_pkce.headers["location"])
    assert error["error"] == "invalid_request" and "requires PKCE" in error["error_description"], error
    back = idp.login(session, url, "alice")
    refused = idp.token_request("web", {"grant_type": "authorization_code", "code": callback_params(back)["code"],
                                        "redirect_uri": REDIRECT, "code_verifier": Pkce().verifier})
    assert refused.status_code == 400 and refused.json()["error"] == "invalid_grant"


def test_user_in_300_groups_gets_them_all_in_the_id_token(idp: OidcProvider) -> None:
    idp.set_client(OidcClient("web-many", redirect_uris=(REDIRECT,)))
    tokens = code_login(idp, "web-many", "many")
    groups = jwt_parts(tokens["id_token"])[1]["groups"]
    assert len(groups) == 301 and groups[0] == "team-000" and groups[-1] == "luigi-viewers"
    assert len(tokens["id_token"]) > 4096  # a cookie could not hold it


def test_refresh_token_rotates_and_survives_key_rotation(idp: OidcProvider) -> None:
    idp.set_client(OidcClient("web-refresh", redirect_uris=(REDIRECT,)))
    first = code_login(idp, "web-refresh", "olga")
    kid = idp.rotate_keys()  # the provider swaps instances: sessions and refresh tokens are kept
    refresh = {"grant_type": "refresh_token", "refresh_token": first["refresh_token"]}
    response = idp.token_request("web-refresh", refresh)
    assert response.status_code == 200, response.text
    second = response.json()
    assert second["refresh_token"] != first["refresh_token"]
    header, claims = jwt_parts(second["id_token"])
    assert header["kid"] == kid and claims["groups"] == ["luigi-operators"]
    verify_rs256(second["id_token"], idp.jwks())

    replay = idp.token_request("web-refresh", refresh)
    assert replay.status_code == 400 and replay.json()["error"] == "invalid_grant"


class _RelyingPartyEndpoint:
    """A real HTTPS endpoint on loopback standing in for the relying party (the scheduler's OIDC
    routes come with issue 17): it records each GET's path and query (the redirect back from the
    IdP) and each POSTed form (a back-channel logout token), and answers 200."""

    def __init__(self, directory: Path) -> None:
        self.ca_file, cert, key = write_test_ca(directory, ("127.0.0.1",))
        self.received: list[dict[str, list[str]]] = []
        self.visited: list[str] = []
        received, visited = self.received, self.visited

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                visited.append(self.path)
                self._answer()

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["content-length"]))
                received.append(parse_qs(body.decode()))
                self._answer()

            def _answer(self) -> None:
                self.send_response(200)
                self.send_header("content-type", "text/plain")
                self.send_header("content-length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert, key)
        self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
        self.base = f"https://127.0.0.1:{self.server.server_address[1]}"
        self.url = f"{self.base}/oidc/backchannel-logout"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def relying_party(tmp_path: Path) -> Iterator[_RelyingPartyEndpoint]:
    endpoint = _RelyingPartyEndpoint(tmp_path)
    yield endpoint
    endpoint.close()


def test_login_page_works_in_headless_chromium(idp: OidcProvider, relying_party: _RelyingPartyEndpoint,
                                              tmp_path: Path) -> None:
    """The browser path the scheduler's tests take: the IdP's page, its cookies across the
    cross-site redirects, and the redirect back with a code that the token endpoint accepts."""
    callback = f"{relying_party.base}/oidc/callback"
    idp.set_client(OidcClient("web-browser", redirect_uris=(callback,)))
    pkce = Pkce()
    start = authorize_url(idp, "web-browser", callback, pkce, state="browser-state", nonce="browser-nonce")
    user = idp.user("many")

    async def scenario(browser: DevTools) -> object:
        await browser.connect()
        await browser.navigate(start)
        await browser.wait_until("document.getElementById('login-form') !== null")
        await browser.evaluate_now(f"""
            document.getElementById('username').value = {json.dumps(user.username)};
            document.getElementById('password').value = {json.dumps(user.password)};
            document.getElementById('login-submit').click();""")
        return await browser.wait_until(f"location.href.startsWith({json.dumps(callback)}) && location.href")

    browser = DevTools(tmp_path / "profile")
    try:
        landed = asyncio.run(scenario(browser))
    finally:
        browser.close()
    assert isinstance(landed, str)
    params = callback_params(landed)
    assert params["state"] == "browser-state" and landed[len(relying_party.base):] in relying_party.visited
    response = idp.token_request("web-browser", {"grant_type": "authorization_code", "code": params["code"],
                                                 "redirect_uri": callback, "code_verifier": pkce.verifier})
    assert response.status_code == 200, response.text
    claims = verify_rs256(response.json()["id_token"], idp.jwks())
    assert claims["nonce"] == "browser-nonce" and len(claims["groups"]) == 301


def test_rp_initiated_logout_sends_a_back_channel_logout_token(relying_party: _RelyingPartyEndpoint) -> None:
    after = "https://127.0.0.1:9/logged-out"
    client = OidcClient("web-logout", redirect_uris=(REDIRECT,), post_logout_redirect_uris=(after,),
                        backchannel_logout_uri=relying_party.url)
    provider = OidcProvider(name="logout", backchannel_ca_files=(relying_party.ca_file,), clients=(client,))
    try:
        provider.start()
        session = requests.Session()
        tokens = code_login(provider, "web-logout", "victor", session)
        id_claims = jwt_parts(tokens["id_token"])[1]
        end = provider.discovery()["end_session_endpoint"] + "?" + urlencode(
            {"id_token_hint": tokens["id_token"], "post_logout_redirect_uri": after, "state": "bye"})
        assert provider.logout(session, end) == f"{after}?state=bye"

        assert len(relying_party.received) == 1, provider.log()
        form = relying_party.received[0]
        header, _ = jwt_parts(form["logout_token"][0])
        assert header["typ"] == "logout+jwt"
        claims = verify_rs256(form["logout_token"][0], provider.jwks())
        assert claims["iss"] == provider.issuer and claims["aud"] == "web-logout"
        assert claims["sub"] == "victor" and claims["sid"] == id_claims["sid"] and "nonce" not in claims
        assert claims["events"] == {"http://schemas.openid.net/event/backchannel-logout": {}}

        # The refresh token ended with the IdP session (no offline_access was asked for).
        refresh = provider.token_request("web-logout", {"grant_type": "refresh_token",
                                                        "refresh_token": tokens["refresh_token"]})
        assert refresh.status_code == 400 and refresh.json()["error"] == "invalid_grant"
    finally:
        provider.destroy()


def test_two_issuers_at_once_keep_their_keys_and_sessions_apart() -> None:
    first = OidcProvider(name="corp", clients=(OidcClient("web", redirect_uris=(REDIRECT,)),))
    second = OidcProvider(name="ci", clients=(OidcClient("web", redirect_uris=(REDIRECT,)),))
    try:
        first.start()
        second.start()
        assert first.issuer != second.issuer
        token = second.client_credentials_token("luigi-appliance")
        assert verify_rs256(token, second.jwks())["iss"] == second.issuer
        with pytest.raises(KeyError):
            verify_rs256(token, first.jwks())

        # One browser signed in at both: each IdP's session cookie survives the other's.
        session = requests.Session()
        code_login(first, "web", "alice", session)
        code_login(second, "web", "olga", session)
        pkce = Pkce()
        again = session.get(authorize_url(first, "web", REDIRECT, pkce, state="s", nonce="n"),
                            allow_redirects=False, verify=str(first.ca_file), timeout=10)
        hops = 0
        while again.is_redirect and again.headers["location"].startswith(first.issuer) and hops < 5:
            again = session.get(again.headers["location"], allow_redirects=False, verify=str(first.ca_file), timeout=10)
            hops += 1
        assert again.is_redirect and again.headers["location"].startswith(REDIRECT), again.text
        assert "code" in callback_params(again.headers["location"])
    finally:
        first.destroy()
        second.destroy()


def test_config_errors_are_one_line_and_a_bad_reload_keeps_the_old_keys(idp: OidcProvider, tmp_path: Path) -> None:
    result = subprocess.run(["node", str(PROVIDER_DIR / "provider.mjs"), str(tmp_path / "missing.json")],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert result.stderr == f"oidc-provider fixture: cannot read config file {tmp_path / 'missing.json'}: ENOENT\n"

    kids = [k["kid"] for k in idp.jwks()["keys"]]
    idp.jwks_file.write_text('{"keys": [')
    assert idp.hangup() == "refused"
    assert "is not valid JSON" in idp.log()
    assert [k["kid"] for k in idp.jwks()["keys"]] == kids and idp.running()
    idp.reload()  # rewrites both files: accepted again
