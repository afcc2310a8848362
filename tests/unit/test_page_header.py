"""The role-aware UI's pure parts: the header's markup, the controls each role is offered, the
banner settings, which history rows get a failure reason, and the lockout's wording."""

from __future__ import annotations

import pytest

from luigi_appliance.auth import Role
from luigi_appliance.history.pages import newest_failures, status_style
from luigi_appliance.server.login import lockout_left
from luigi_appliance.server.page_header import Banner, PageHeader, Visitor
from luigi_appliance.server.settings import parse_banner, parse_color
from luigi_appliance.server.task_failures import summary
from luigi_appliance.server.visualiser import CONTROLS, hidden_controls, patched_index, read_index


def test_the_header_shows_banner_user_role_and_a_session_logout_as_text() -> None:
    header = PageHeader(Banner("<b>PROD</b>", "#c9302c"))
    markup = header.html(Visitor("eve<script>", Role.OPERATOR, csrf_token='t"k'))
    assert 'id="appliance-banner" style="background: #c9302c">&lt;b&gt;PROD&lt;/b&gt;</span>' in markup
    assert "eve&lt;script&gt; <span class=\"appliance-role\">(operator)</span>" in markup
    assert 'name="csrf_token" value="t&quot;k"' in markup and 'action="/logout"' in markup
    # Basic or bearer: who, but no logout (those credentials come with every request).
    basic = PageHeader().html(Visitor("w", Role.WORKER))
    assert "(worker)" in basic and "appliance-logout" not in basic and "appliance-banner" not in basic
    assert "appliance-product" not in PageHeader().html(None, product_link=None)


@pytest.mark.parametrize(("role", "hidden"), [
    (Role.VIEWER, set(CONTROLS.values())),
    (Role.WORKER, set(CONTROLS.values())),
    (Role.OPERATOR, set()),
    (Role.ADMIN, set()),
])
def test_each_role_is_offered_the_controls_the_policy_lets_it_call(role: Role, hidden: set[str]) -> None:
    css = hidden_controls(Visitor("u", role))
    assert {line.split(" { display: none !important; }")[0] for line in css.splitlines()} == hidden


def test_every_control_names_a_method_of_the_policy_and_luigi_index_takes_the_patches() -> None:
    from luigi_appliance import policy

    assert set(CONTROLS) <= set(policy.RPC_METHODS)
    page = patched_index(read_index())
    # The shim comes right after jQuery, before luigi's first script.
    assert page.index("visualiser-post.js") < page.index('src="js/luigi.js"')
    assert "luigi-appliance run --module {{taskModule}}" in page and "luigi --module" not in page


def test_banner_and_colour_values() -> None:
    assert parse_banner("  PRODUCTION ") == "PRODUCTION"
    assert parse_color("DarkRed") == "darkred" and parse_color("#C9302C") == "#c9302c"
    for bad in ("red;background:url(//x)", "#12", "rgb(1,2,3)", ""):
        with pytest.raises(ValueError, match="expected #rgb"):
            parse_color(bad)
    for bad in ("", "x" * 41, "A\x1bB"):
        with pytest.raises(ValueError, match="expected 1 to 40 printable"):
            parse_banner(bad)


def test_only_the_newest_row_of_a_failed_task_gets_the_schedulers_error() -> None:
    errors = {"a": "Traceback\n  ...\nValueError: boom\n", "b": "KeyError: x"}
    rows = [(5, "a", "FAILED"), (4, "b", "DONE"), (3, "a", "FAILED"), (2, "c", "FAILED"), (1, None, "FAILED")]
    assert newest_failures(rows, errors.get) == {5: errors["a"]}
    assert summary(errors["a"]) == "ValueError: boom"
    assert (status_style("DONE"), status_style("FAILED"), status_style("RUNNING"), status_style(None)) == (
        "label-success", "label-danger", "label-primary", "label-default")


def test_the_lockout_is_said_in_seconds_or_minutes() -> None:
    assert [lockout_left(s) for s in (0.2, 1, 59.5, 119, 120, 899.9, 900)] == [
        "1 second", "1 second", "60 seconds", "119 seconds", "2 minutes", "15 minutes", "15 minutes"]
