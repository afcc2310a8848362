"""Single sign-on in a real headless Chromium against a real OpenID Provider: the scheduler's
login page, its "Sign in with corp" link, the IdP's own login page across the cross-site
redirects (the issuer is https://localhost:PORT, the scheduler https://127.0.0.1:PORT), back on
the visualiser with the header naming the user and role; a user in 300 groups gets a small
cookie; "Log out" goes through the IdP's logout page back to the scheduler's login page and
both sessions are over."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path

import pytest
import requests
from test_login_browser import session_cookie
from test_oidc_login import Sso, api_status, sso, wait_for_audit  # noqa: F401 - sso is the fixture
from test_visualiser_browser import DevTools

VISUALISER_READY = ("location.pathname === '/static/visualiser/index.html' && "
                    "window.luigiAppliance && window.luigiAppliance.ready === true")


async def sign_in(browser: DevTools, env: Sso, user: str, issuer: str = "corp") -> None:
    """From the scheduler's front page to the visualiser through the IdP, as a person would."""
    idp_user = env.idps[issuer].user(user)
    await browser.navigate(f"{env.server.url}/")
    await browser.wait_until(f"location.pathname === '/login' && document.getElementById('sso-{issuer}') !== null")
    await browser.evaluate_now(f"document.getElementById('sso-{issuer}').click(); true")
    await browser.wait_until(f"location.href.startsWith({json.dumps(env.idps[issuer].issuer)}) && "
                             "document.getElementById('login-form') !== null")
    await browser.evaluate_now(f"""
        document.getElementById('username').value = {json.dumps(idp_user.username)};
        document.getElementById('password').value = {json.dumps(idp_user.password)};
        document.getElementById('login-submit').click(); true""")
    await browser.wait_until(VISUALISER_READY)


@pytest.mark.doc_rule("sso-small-cookie", "sso-logout")
def test_sign_in_with_the_idp_in_chromium_and_log_out_through_it(sso: Callable[..., Sso],  # noqa: F811
                                                                  tmp_path: Path) -> None:
    env = sso(names=("corp", "ci"))

    async def scenario(browser: DevTools) -> dict:
        await browser.connect()
        await browser.send("Network.enable")
        await sign_in(browser, env, "many")
        seen: dict = {
            "header": await browser.evaluate_now("document.getElementById('appliance-user').innerText"),
            "cookie": await session_cookie(browser, env.server),
            "buttons": None,
        }
        await browser.evaluate_now("document.querySelector('#appliance-logout button').click(); true")
        # The IdP's own "sign out?" page, then back to our login page with both buttons.
        await browser.wait_until(f"location.href.startsWith({json.dumps(env.idps['corp'].issuer)}) && "
                                 "document.getElementById('logout-yes') !== null")
        await browser.evaluate_now("document.getElementById('logout-yes').click(); true")
        await browser.wait_until(f"location.href.startsWith({json.dumps(env.server.url + '/login')}) && "
                                 "document.getElementById('sso-ci') !== null")
        seen["buttons"] = await browser.evaluate_now(
            "Array.from(document.querySelectorAll('a.sso')).map(a => a.innerText)")
        seen["cookie_after_logout"] = await session_cookie(browser, env.server)
        # Signing in again needs the IdP's password again: its session ended too.
        await browser.evaluate_now("document.getElementById('sso-corp').click(); true")
        seen["idp_asks_again"] = await browser.wait_until("document.getElementById('login-form') !== null")
        return seen

    browser = DevTools(tmp_path / "profile")
    try:
        seen = asyncio.run(scenario(browser))
    finally:
        browser.close()
    assert seen["header"] == "many (viewer)"
    cookie = seen["cookie"]
    assert cookie is not None and (cookie["secure"], cookie["httpOnly"], cookie["sameSite"]) == (True, True, "Strict")
    assert len(cookie["name"]) + len(cookie["value"]) == len("__Host-luigi-session") + 43 == cookie["size"]
    assert seen["buttons"] == ["Sign in with corp", "Sign in with ci"]
    assert seen["cookie_after_logout"] is None and seen["idp_asks_again"]
    # The id the browser had is dead on the server too.
    replay = requests.Session()
    replay.trust_env = False
    replay.verify = str(env.server.ca_file)
    replay.cookies.set("__Host-luigi-session", cookie["value"], domain="127.0.0.1", path="/")
    assert api_status(env, replay) == 401
    record = wait_for_audit(env, lambda r: r["event"] == "logout" and r.get("via") == "rp_initiated")
    assert record["principal"] == "many" and record["issuer"] == "corp"
