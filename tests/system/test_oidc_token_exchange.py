"""Machine identities: ``POST /auth/token`` exchanges a JWT of a configured issuer for our bearer
token (OAuth 2.0 Token Exchange, RFC 8693), and ``luigi-appliance run`` does it with
``auth = oidc-exchange``.

Everything is real: panva's oidc-provider (tests/oidc_fixture.py) issues the client-credentials
access tokens and signs the tokens a real IdP would not issue (expired, wrong audience, another
issuer's iss) with its own key; a real scheduler process verifies them against the IdP's
discovery and JWKS over TLS from the IdP's test CA; a real luigi worker runs a pipeline with the
token it got. The refusals are checked where an operator sees them: the HTTP answer, the audit
trail, /metrics, the server's log (none holds the token).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import time
from pathlib import Path
from typing import Any

import pytest
import requests
from oidc_fixture import OidcClient, OidcProvider, b64url, jwt_parts, provider_fixture

from conftest import PIPELINES, Server, cli, client_conf

AUDIENCE = "luigi-scheduler"
TOKEN_EXCHANGE = "urn:ietf:params:oauth:grant-type:token-exchange"
JWT_TYPE = "urn:ietf:params:oauth:token-type:jwt"
ACCESS_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:access_token"
ADMIN_PASSWORD = "admin-password-123"  # conftest's configured_server

_ROBOTS = (OidcClient("etl-robot", grant_types=("client_credentials",)),
           OidcClient("viewer-robot", grant_types=("client_credentials",)),
           OidcClient("stranger", grant_types=("client_credentials",)))
idp = provider_fixture("idp", clients=_ROBOTS)
# A second issuer the scheduler knows (for browser login, say) but takes no subject token of.
other_idp = provider_fixture("other_idp", clients=(OidcClient("etl-robot", grant_types=("client_credentials",)),))


def oidc_sections(idp: OidcProvider, other: OidcProvider) -> str:
    return f"""
[oidc.corp]
issuer = {idp.issuer}
token_exchange = true
audience = {AUDIENCE}
ca_file = {idp.ca_file}
roles = claim:client_id=etl-robot -> worker; claim:client_id=viewer-robot -> viewer
families = claim:client_id=etl-robot -> Extract Transform Report
[oidc.other]
issuer = {other.issuer}
audience = {AUDIENCE}
ca_file = {other.ca_file}
roles = issuer:other -> admin
"""


@pytest.fixture
def scheduler(configured_server, idp: OidcProvider, other_idp: OidcProvider) -> Server:
    # configured_server's file ends with its [audit] section: the [auth] keys go in their own.
    return configured_server(oidc_sections(idp, other_idp) + "[auth]\nfailure_limit = 3\n")


def _anonymous(server: Server) -> requests.Session:
    session = requests.Session()
    session.trust_env = False
    session.verify = str(server.ca_file)
    return session


def exchange(server: Server, subject_token: str, **extra: str) -> requests.Response:
    form = {"grant_type": TOKEN_EXCHANGE, "subject_token": subject_token, "subject_token_type": JWT_TYPE, **extra}
    return _anonymous(server).post(f"{server.url}/auth/token", data=form, timeout=30)


def bearer(server: Server, token: str) -> requests.Session:
    session = _anonymous(server)
    session.headers["Authorization"] = f"Bearer {token}"
    return session


def audit_lines(server: Server, tmp_path: Path, event: str) -> list[dict[str, Any]]:
    """The audit trail's ``event`` lines, once the server has stopped (everything written)."""
    assert server.stop() == 0
    lines = [json.loads(line) for line in (tmp_path / "audit.log").read_text().splitlines()]
    return [line for line in lines if line["event"] == event]


def metric(server: Server, name: str, **labels: str) -> float:
    text = server.session().get(f"{server.url}/metrics", timeout=30).text
    wanted = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    match = re.search(rf"^{name}\{{{wanted}\}} (\S+)$", text, re.M)
    return float(match.group(1)) if match else 0.0


def subject_token_file(tmp_path: Path, token: str) -> Path:
    path = tmp_path / "subject.jwt"
    path.write_text(token + "\n")
    path.chmod(0o600)
    return path


def oidc_client_conf(tmp_path: Path, server: Server, source: str) -> Path:
    """client.conf with ``auth = oidc-exchange`` and the token's ``source``; three attempts per
    call, so a refusal that were retried would show in the audit trail."""
    conf = client_conf(tmp_path, server)
    text = conf.read_text().replace("retry_attempts = 1", "retry_attempts = 3")
    conf.write_text(text + f"auth = oidc-exchange\n{source}\n")
    return conf


def run_pipeline(conf: Path, out: Path, *task: str) -> Any:
    return cli("run", "--client-config", str(conf), "--module", "diamond_pipeline", *(task or ("Report",)),
               "--out-dir", str(out), env={"PYTHONPATH": str(PIPELINES)}, cwd=conf.parent)


@pytest.mark.doc_rule("token-exchange")
def test_a_client_credentials_token_is_exchanged_and_runs_a_pipeline(scheduler: Server, idp: OidcProvider,
                                                                     tmp_path: Path) -> None:
    subject = idp.client_credentials_token(AUDIENCE, "etl-robot")
    answer = exchange(scheduler, subject)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert set(body) == {"access_token", "issued_token_type", "token_type", "expires_in"}
    assert body["issued_token_type"] == ACCESS_TOKEN_TYPE and body["token_type"] == "Bearer"
    # Never beyond the subject token (600 s at this IdP), though [tokens] ttl is 900 s.
    exp = jwt_parts(subject)[1]["exp"]
    assert 0 < body["expires_in"] <= exp - time.time() + 2 and body["expires_in"] < 900
    ours = body["access_token"]
    assert ours != subject
    task_list = bearer(scheduler, ours).get(f"{scheduler.url}/api/task_list", params={"data": "{}"}, timeout=30)
    assert task_list.status_code == 200, task_list.text

    # The worker exchanges the token from the file itself (the file is all it is given).
    out = tmp_path / "out"
    conf = oidc_client_conf(tmp_path, scheduler, f"subject_token_file = {subject_token_file(tmp_path, subject)}")
    result = run_pipeline(conf, out)
    assert result.returncode == 0, result.stderr[-3000:]
    assert (out / "report.txt").exists()
    assert subject not in result.stderr + result.stdout
    assert metric(scheduler, "luigi_appliance_auth_successes_total", backend="oidc:corp") >= 2
    assert metric(scheduler, "luigi_appliance_tokens_issued_total", role="worker") >= 2

    exchanges = audit_lines(scheduler, tmp_path, "token_exchange")
    assert len(exchanges) >= 2 and {x["outcome"] for x in exchanges} == {"issued"}
    fields = {k: v for k, v in exchanges[0].items() if k not in ("time", "seq", "prev", "hash")}
    assert fields == {"event": "token_exchange", "principal": "etl-robot", "source": "127.0.0.1", "outcome": "issued",
                      "issuer": "corp", "subject": "etl-robot", "client_id": "etl-robot",
                      "jti": jwt_parts(subject)[1]["jti"], "role": "worker", "expires_in": body["expires_in"]}
    rpc = [x for x in audit_lines_from_file(tmp_path) if x["event"] == "rpc"]
    assert {"etl-robot"} == {x["principal"] for x in rpc if x["method"] == "add_task"}
    for secret in (subject, ours):
        assert secret not in (tmp_path / "audit.log").read_text()
        assert secret not in scheduler.log()


def audit_lines_from_file(tmp_path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (tmp_path / "audit.log").read_text().splitlines()]


def _hs256_with_public_key(idp: OidcProvider, claims: dict[str, Any]) -> str:
    """The classic forgery: HS256 keyed with the issuer's published RSA key (PyJWT refuses to
    sign it, which is the point: the bytes are assembled here)."""
    head = b64url(json.dumps({"alg": "HS256", "typ": "JWT", "kid": idp.signing_kid}).encode())
    body = b64url(json.dumps(claims).encode())
    mac = hmac.new(idp.public_key_pem(), f"{head}.{body}".encode(), hashlib.sha256).digest()
    return f"{head}.{body}.{b64url(mac)}"


def _alg_none(claims: dict[str, Any]) -> str:
    head = b64url(json.dumps({"alg": "none", "typ": "JWT"}).encode())
    return f"{head}.{b64url(json.dumps(claims).encode())}."


def refused_tokens(idp: OidcProvider, other: OidcProvider) -> dict[str, tuple[str, str]]:
    """Case -> (token, the refusal class the scheduler must name)."""
    now = int(time.time())
    good = {"iss": idp.issuer, "aud": AUDIENCE, "sub": "etl-robot", "client_id": "etl-robot",
            "iat": now, "exp": now + 300, "jti": "forged-1"}
    unknown_kid = idp.sign_jwt(good, header={"kid": "no-such-kid"})
    return {
        "expired": (idp.sign_jwt({**good, "iat": now - 900, "exp": now - 600}), "expired"),
        "wrong audience": (idp.client_credentials_token("https://another-api.example.test/", "etl-robot"),
                           "wrong_audience"),
        "wrong issuer": (idp.sign_jwt({**good, "iss": "https://idp.example.invalid"}), "unknown_issuer"),
        "alg none": (_alg_none(good), "bad_algorithm"),
        "HS256 with the RSA public key": (_hs256_with_public_key(idp, good), "bad_algorithm"),
        "unknown kid": (unknown_kid, "unknown_key"),
        "an issuer without token exchange": (other.client_credentials_token(AUDIENCE, "etl-robot"),
                                             "unknown_issuer"),
        "no role": (idp.client_credentials_token(AUDIENCE, "stranger"), "no_role"),
    }


@pytest.mark.doc_rule("token-exchange-refusals")
def test_refused_subject_tokens_name_their_class_and_are_audited_without_the_token(
        scheduler: Server, idp: OidcProvider, other_idp: OidcProvider, tmp_path: Path) -> None:
    cases = refused_tokens(idp, other_idp)
    for case, (token, refusal) in cases.items():
        answer = exchange(scheduler, token)
        assert answer.status_code == 400, (case, answer.text)
        body = answer.json()
        assert body == {"error": "invalid_request", "error_description": f"subject token refused ({refusal})"}, case
        assert token not in answer.text
    for refusal in {r for _, r in cases.values()}:
        count = sum(1 for _, r in cases.values() if r == refusal)
        assert metric(scheduler, "luigi_appliance_auth_failures_total", backend="oidc", reason=refusal) == count
    assert metric(scheduler, "luigi_appliance_tokens_issued_total", role="worker") == 0

    # The worker's view: a refused exchange is final (exit 3, one line naming the class), not retried.
    expired = cases["expired"][0]
    conf = oidc_client_conf(tmp_path, scheduler, f"subject_token_file = {subject_token_file(tmp_path, expired)}")
    result = run_pipeline(conf, tmp_path / "out")
    assert result.returncode == 3, result.stderr[-3000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("luigi-appliance: error:")]
    assert len(errors) == 1 and "token exchange" in errors[0] and "(expired)" in errors[0], result.stderr[-3000:]
    assert "Traceback" not in result.stderr and expired not in result.stderr

    refusals = audit_lines(scheduler, tmp_path, "token_exchange")
    assert [x["reason"] for x in refusals] == [r for _, r in cases.values()] + ["expired"]
    assert {x["outcome"] for x in refusals} == {"refused"} and {x["principal"] for x in refusals} == {None}
    assert refusals[0]["claimed_issuer"] == idp.issuer and refusals[2]["claimed_issuer"] == "https://idp.example.invalid"
    trail, log = (tmp_path / "audit.log").read_text(), scheduler.log()
    for token, _ in cases.values():
        assert token not in trail and token not in log
        # Nor a part of it (what a careless "the first 40 characters" would leak).
        for part in filter(None, token.split(".")):
            assert part[:40] not in trail and part[:40] not in log


@pytest.mark.doc_rule("token-exchange-requests")
def test_malformed_exchange_requests_get_rfc6749_errors(scheduler: Server, idp: OidcProvider) -> None:
    subject = idp.client_credentials_token(AUDIENCE, "etl-robot")
    url = f"{scheduler.url}/auth/token"
    anonymous = _anonymous(scheduler)

    def error(answer: requests.Response) -> str:
        assert answer.status_code == 400, answer.text
        assert answer.headers["Content-Type"].startswith("application/json")
        return answer.json()["error"]

    assert error(anonymous.post(url, data={"grant_type": "client_credentials"}, timeout=30)) == "unsupported_grant_type"
    assert error(anonymous.post(url, data={"grant_type": "password", "username": "admin",
                                           "password": ADMIN_PASSWORD}, timeout=30)) == "unsupported_grant_type"
    assert error(exchange(scheduler, "")) == "invalid_request"
    assert error(exchange(scheduler, subject, subject_token_type="urn:ietf:params:oauth:token-type:id_token")) \
        == "invalid_request"
    assert error(exchange(scheduler, subject, requested_token_type="urn:ietf:params:oauth:token-type:refresh_token")) \
        == "invalid_request"
    assert error(exchange(scheduler, subject, actor_token=subject, actor_token_type=JWT_TYPE)) == "invalid_request"
    twice = f"grant_type={TOKEN_EXCHANGE}&subject_token={subject}&subject_token={subject}&subject_token_type={JWT_TYPE}"
    assert error(anonymous.post(url, data=twice, timeout=30,
                                headers={"Content-Type": "application/x-www-form-urlencoded"})) == "invalid_request"
    # Another credential beside the subject token would go unchecked: refused, not ignored.
    with_basic = scheduler.session().post(url, data={"grant_type": TOKEN_EXCHANGE, "subject_token": subject,
                                                     "subject_token_type": JWT_TYPE}, timeout=30)
    assert error(with_basic) == "invalid_request"
    # The access_token type names the same JWT (RFC 9068): accepted.
    accepted = exchange(scheduler, subject, subject_token_type=ACCESS_TOKEN_TYPE, audience="ignored")
    assert accepted.status_code == 200, accepted.text


@pytest.mark.doc_rule("token-password-unchanged")
def test_the_password_grant_is_as_strict_as_before(scheduler: Server) -> None:
    url = f"{scheduler.url}/auth/token"
    answer = scheduler.session().post(url, timeout=30)
    assert answer.status_code == 200, answer.text
    assert set(answer.json()) == {"token_type", "access_token", "expires_in"} and answer.json()["expires_in"] == 900
    token = answer.json()["access_token"]
    # A token or nothing cannot mint a token; a GET is no request for one.
    assert bearer(scheduler, token).post(url, timeout=30).status_code == 403
    anonymous = _anonymous(scheduler).post(url, timeout=30)
    assert anonymous.status_code == 401 and anonymous.headers["WWW-Authenticate"].startswith("Basic")
    assert scheduler.session().get(url, timeout=30).status_code == 405
    # Wrong passwords lock the name out ([auth] failure_limit = 3 here): no password is checked.
    for _ in range(3):
        assert scheduler.session("mallory", "guess-password-1").post(url, timeout=30).status_code == 401
    locked = scheduler.session("mallory", "guess-password-2").post(url, timeout=30)
    assert locked.status_code == 429 and int(locked.headers["Retry-After"]) > 0


@pytest.mark.doc_rule("token-exchange-role")
def test_the_exchanged_identity_has_its_mapped_role_and_families(scheduler: Server, idp: OidcProvider) -> None:
    viewer = exchange(scheduler, idp.client_credentials_token(AUDIENCE, "viewer-robot"))
    assert viewer.status_code == 200, viewer.text
    session = bearer(scheduler, viewer.json()["access_token"])
    assert scheduler.rpc("task_list", session=session).status_code == 200
    refused = scheduler.rpc("add_task", session=session, worker="viewer-w", task_id="Extract_1_abc", family="Extract")
    assert refused.status_code == 403, refused.text

    worker = exchange(scheduler, idp.client_credentials_token(AUDIENCE, "etl-robot"))
    session = bearer(scheduler, worker.json()["access_token"])
    allowed = scheduler.rpc("add_task", session=session, worker="etl-w", task_id="Extract_1_abc", family="Extract")
    assert allowed.status_code == 200, allowed.text
    other_family = scheduler.rpc("add_task", session=session, worker="etl-w", task_id="Payroll_1_abc", family="Payroll")
    assert other_family.status_code == 403, other_family.text


def test_the_subject_token_command_is_run_without_a_shell_at_each_exchange(scheduler: Server, idp: OidcProvider,
                                                                         tmp_path: Path) -> None:
    token_file = subject_token_file(tmp_path, idp.client_credentials_token(AUDIENCE, "etl-robot"))
    # A shell would expand the $ and the ;: run without one, cat gets them as file names and fails.
    conf = oidc_client_conf(tmp_path, scheduler, "subject_token_command = /bin/cat '$HOME;true'")
    failed = run_pipeline(conf, tmp_path / "out", "Extract", "--part", "1")
    assert failed.returncode != 0 and "subject_token_command /bin/cat exited with 1" in failed.stderr, failed.stderr
    conf = oidc_client_conf(tmp_path, scheduler, f"subject_token_command = /bin/cat {token_file}")
    result = run_pipeline(conf, tmp_path / "out", "Extract", "--part", "1")
    assert result.returncode == 0, result.stderr[-3000:]
    assert (tmp_path / "out" / "extract-1.txt").exists()


@pytest.mark.doc_rule("token-exchange-lifetime")
def test_our_token_ends_with_the_subject_token(scheduler: Server, idp: OidcProvider) -> None:
    now = int(time.time())
    short = idp.sign_jwt({"iss": idp.issuer, "aud": AUDIENCE, "sub": "etl-robot", "client_id": "etl-robot",
                          "iat": now, "exp": now + 4, "jti": "short-lived"})
    answer = exchange(scheduler, short)
    assert answer.status_code == 200, answer.text
    assert answer.json()["expires_in"] <= 4
    session = bearer(scheduler, answer.json()["access_token"])
    assert scheduler.rpc("task_list", session=session).status_code == 200
    time.sleep(answer.json()["expires_in"] + 1.5)
    # [tokens] ttl (900 s) has not passed, the subject token's exp has: refused.
    assert scheduler.rpc("task_list", session=session).status_code == 401


def test_an_unreachable_issuer_is_503_and_audited_as_unavailable(scheduler: Server, idp: OidcProvider,
                                                                 tmp_path: Path) -> None:
    subject = idp.client_credentials_token(AUDIENCE, "etl-robot")
    idp.stop()  # before the scheduler ever fetched its discovery document
    try:
        answer = exchange(scheduler, subject)
    finally:
        idp.start()
    assert answer.status_code == 503, answer.text
    assert answer.json()["error"] == "temporarily_unavailable"
    assert "issuer_unavailable" in answer.json()["error_description"]
    (line,) = audit_lines(scheduler, tmp_path, "token_exchange")
    assert line["outcome"] == "unavailable" and line["reason"] == "issuer_unavailable"
