"""The claim rules of [oidc.NAME] roles/families (auth/oidc/claims.py): parsing, and that every
matching rule contributes (highest role, union of families), never just the first."""

from __future__ import annotations

import pytest

from luigi_appliance.auth import Role
from luigi_appliance.auth.oidc.claims import grant, groups_of, parse_family_rules, parse_role_rules, user_name

CLAIMS = {"sub": "repo:acme/etl:ref:refs/heads/main", "repository_owner": "acme", "amr": ["pwd", "otp"],
          "email_verified": True, "groups": ["etl", "reports"]}


def test_rules_parse_and_print_back_as_written() -> None:
    text = "group:luigi-admins -> admin; claim:repository_owner=acme -> worker; issuer:gha -> viewer"
    rules = parse_role_rules(text)
    assert [str(r) for r in rules] == text.split("; ")
    assert [r.role for r in rules] == [Role.ADMIN, Role.WORKER, Role.VIEWER]
    # A claim value may hold ':' and '=' (a GitHub or Kubernetes sub): the name ends at the first '='.
    (rule,) = parse_role_rules("claim:sub=system:serviceaccount:ci:luigi->worker")
    assert (rule.match.name, rule.match.value) == ("sub", "system:serviceaccount:ci:luigi")
    families = parse_family_rules("group:etl -> Etl* Report*;claim:repository=acme/etl -> Pipeline*")
    assert [f.patterns for f in families] == [("Etl*", "Report*"), ("Pipeline*",)]


@pytest.mark.parametrize(("text", "message"), [
    ("group:admins admin", "expected rules 'MATCH -> ...'"),
    ("user:alice -> admin", "expected rules 'MATCH -> ...'"),
    ("claim:repository_owner -> worker", "expected claim:NAME=VALUE"),
    ("group:a b -> worker", "without blanks"),
    ("group:admins -> root", "expected a role"),
    ("", "expected one or more rules"),
])
def test_bad_role_rules_say_what_was_expected(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_role_rules(text)


def test_every_matching_rule_contributes_the_highest_role_and_the_union_of_families() -> None:
    roles = parse_role_rules("group:etl -> viewer; claim:repository_owner=acme -> worker; group:ops -> admin")
    families = parse_family_rules("group:etl -> Etl*; group:reports -> Report* Etl*; issuer:gha -> Shared*; "
                                  "group:ops -> Ops*")
    result = grant("gha", CLAIMS, groups_of(CLAIMS, ("groups",)), roles, families)
    assert result.role == Role.WORKER
    assert result.families == ("Etl*", "Report*", "Shared*")
    assert [rule for rule, _why in result.matched] == [
        "roles: group:etl -> viewer", "roles: claim:repository_owner=acme -> worker",
        "families: group:etl -> Etl*", "families: group:reports -> Report* Etl*", "families: issuer:gha -> Shared*"]


def test_claims_match_exactly_lists_by_membership_and_json_scalars_by_their_text() -> None:
    def role(rule: str) -> Role | None:
        return grant("gha", CLAIMS, frozenset(), parse_role_rules(rule), ()).role

    assert role("claim:amr=otp -> worker") == Role.WORKER
    assert role("claim:email_verified=true -> viewer") == Role.VIEWER
    assert role("claim:repository_owner=Acme -> worker") is None  # exact, case included
    assert role("claim:repository_owner=acm -> worker") is None
    assert role("claim:missing=acme -> worker") is None
    assert role("issuer:other -> admin") is None
    assert role("group:etl -> admin") is None  # not in the groups given


def test_families_are_unrestricted_without_family_rules_or_from_operator_up_and_none_when_nothing_matches() -> None:
    groups = frozenset({"etl"})
    assert grant("x", {}, groups, parse_role_rules("group:etl -> worker"), ()).families is None
    families = parse_family_rules("group:reports -> Report*")
    assert grant("x", {}, groups, parse_role_rules("group:etl -> worker"), families).families == ()
    assert grant("x", {}, groups, parse_role_rules("group:etl -> operator"), families).families is None
    assert grant("x", {}, groups, parse_role_rules("group:other -> admin"), families).role is None


def test_the_user_name_is_the_first_claim_present_and_must_be_a_valid_name() -> None:
    assert user_name({"sub": "s-1", "preferred_username": "alice"}, ("preferred_username", "sub")) == "alice"
    assert user_name({"sub": "s-1"}, ("preferred_username", "sub")) == "s-1"
    for claims, message in (({}, "none of the user-name claims"), ({"sub": 7}, "not a string"),
                            ({"sub": "alice\n"}, "control character"), ({"sub": " alice"}, "blank"),
                            ({"sub": "x" * 300}, "too long")):
        with pytest.raises(ValueError, match=message):
            user_name(claims, ("preferred_username", "sub"))


def test_groups_come_from_every_groups_claim_as_strings() -> None:
    assert groups_of({"groups": ["a", "b"], "roles": "c"}, ("groups", "roles")) == {"a", "b", "c"}
    assert groups_of({}, ("groups",)) == frozenset()
    with pytest.raises(ValueError, match="not a string or a list of strings"):
        groups_of({"groups": [{"id": 1}]}, ("groups",))
