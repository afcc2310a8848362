"""[oidc.NAME] sections: a declared family of named sections, validated like every other
section (file:line issues, "did you mean"), several at once; algorithms fail closed."""

from __future__ import annotations

from pathlib import Path

import pytest

from luigi_appliance.auth.oidc import Refusal
from luigi_appliance.auth.oidc.settings import parse_algorithms
from luigi_appliance.auth.outcomes import Reason
from luigi_appliance.config import render_effective
from luigi_appliance.config_loader import load_settings
from luigi_appliance.errors import ConfigError


def load(tmp_path: Path, text: str):
    conf = tmp_path / "scheduler.conf"
    conf.write_text(text)
    return load_settings([conf], check_files=False)


def problems(tmp_path: Path, text: str) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load(tmp_path, text)
    return [str(issue) for issue in caught.value.issues]


def test_several_issuers_load_in_file_order_and_show_back(tmp_path: Path) -> None:
    settings = load(tmp_path, """
[oidc.gha]
issuer = https://token.actions.githubusercontent.com
token_exchange = true
audience = https://luigi.example.org
roles = claim:repository_owner=acme -> worker
[oidc.corp]
issuer = https://sso.example.org/realms/acme
algorithms = rs256 ES256
""")
    assert list(settings.oidc) == ["gha", "corp"]
    assert settings.oidc["corp"].algorithms == ("RS256", "ES256")
    assert settings.oidc["gha"].audience == ("https://luigi.example.org",)
    shown = render_effective(settings)
    assert "[oidc.gha]\n" in shown and "roles = claim:repository_owner=acme -> worker\n" in shown
    # What config show prints loads back to the same settings.
    again = load(tmp_path, shown)
    assert again.oidc == settings.oidc


def test_problems_are_reported_at_their_lines_with_suggestions(tmp_path: Path) -> None:
    conf = tmp_path / "scheduler.conf"
    assert problems(tmp_path, """[oidc.corp]
issuer = https://sso.example.org
token_exchange = true
audiance = luigi
[oidc.plain]
issuer = http://sso.example.org
[oidc]
[oidc.9lives]
[oidc.noissuer]
scopes = openid
[oidc.twin]
issuer = https://sso.example.org
token_exchange = true
audience = luigi
[oidc.login]
issuer = https://login.example.org
browser_login = true
roles = issuer:corp -> admin
""") == [
        f"{conf}:1: [oidc.corp] audience: token_exchange = true needs audience: the aud this scheduler's "
        "subject tokens carry",
        f"{conf}:4: [oidc.corp] audiance: unknown key; did you mean 'audience'? (expected one of algorithms, "
        "audience, browser_login, ca_file, cache_ttl, client_auth, client_id, client_secret, client_secret_file, "
        "clock_skew, families, groups_claim, issuer, jwks_refetch_interval, private_key_file, private_key_id, "
        "roles, scopes, timeout, token_exchange, username_claim)",
        f"{conf}:6: [oidc.plain] issuer: expected the issuer's https URL (e.g. "
        "https://idp.example.org/realms/acme), got 'http://sso.example.org'",
        f"{conf}:7: [oidc]: unknown section; did you mean 'oidc.NAME'? (expected one of approval.NAME, "
        "approvals, audit, auth, client_certificates, families, ha, history, ldap, logging, oidc.NAME, resources, "
        "roles, scheduler, secrets, server, session, state, tls, tokens)",
        f"{conf}:8: [oidc.9lives]: expected [oidc.NAME] with a NAME of lower-case letters, digits, _ and - "
        "starting with a letter, got [oidc.9lives]",
        f"{conf}:9: [oidc.noissuer] issuer: [oidc.noissuer] needs issuer = https://... (the issuer URL)",
        f"{conf}:12: [oidc.twin] issuer: [oidc.corp] accepts token exchange for the same issuer URL; keep one",
        f"{conf}:15: [oidc.login] client_id: browser_login = true needs client_id",
        f"{conf}:15: [oidc.login] client_secret: browser_login with client_auth = client_secret_basic needs "
        "client_secret_file = PATH or client_secret = enc:...",
        f"{conf}:18: [oidc.login] roles: issuer:corp in [oidc.login]: an issuer's rules match its own tokens "
        "only; write issuer:login or move the rule to [oidc.corp]",
    ]


@pytest.mark.parametrize("value", ["none", "HS256", "hs512", "RS256 HS384", "RS256, none"])
def test_none_and_hmac_are_refused_at_config_time(value: str) -> None:
    with pytest.raises(ValueError, match="is not accepted: a token's signature must be checked with the "
                                         "issuer's public key"):
        parse_algorithms(value)


def test_a_client_secret_in_clear_is_refused(tmp_path: Path) -> None:
    assert problems(tmp_path, "[oidc.corp]\nissuer = https://sso.example.org\nclient_secret = hunter2\n") == [
        f"{tmp_path / 'scheduler.conf'}:3: [oidc.corp] client_secret: secrets are not accepted in clear; use "
        "client_secret_file = PATH or an enc: value from 'luigi-appliance secret encrypt'"]


def test_every_refusal_class_is_a_bounded_metrics_reason() -> None:
    assert {Reason.of_refusal(r).value for r in Refusal} == {r.value for r in Refusal}
