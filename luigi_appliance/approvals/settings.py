"""``[approvals]`` (who is an agent or a service account, who may only propose, the notification
command) and the rules ``[approval.NAME]``, one per gate."""

from __future__ import annotations

import fnmatch
import re
import shlex
from dataclasses import dataclass, field

from luigi_appliance.approvals.selectors import Kind, Selector, selector_list
from luigi_appliance.settings.declare import key
from luigi_appliance.settings.issues import ConfigIssue
from luigi_appliance.settings.loader import SchemaLoader, section, section_family
from luigi_appliance.settings.parsers import duration_range, int_range, split_list

# What a rule may gate: running a new task, and the operator actions that make a task run again
# (or count as done, which releases what depends on it).
ACTIONS = ("add_task", "forgive_failures", "re_enable_task", "mark_as_done")
# A held task stays in the scheduler (and its snapshot) until decided: undecided requests do not
# pile up for ever unless a rule says 0.
DEFAULT_REQUEST_EXPIRY = 7 * 86400.0
_PARAM = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*)=(.*)$")


def parse_command(value: str) -> tuple[str, ...]:
    """A program and its arguments, split as a shell would but never run by one; absolute path."""
    try:
        argv = tuple(shlex.split(value))
    except ValueError as exc:
        raise ValueError(f"expected a command line: {exc}") from None
    if not argv or not argv[0].startswith("/"):
        raise ValueError(f"expected an absolute path to a program, then its arguments, got {value!r}")
    return argv


def parse_families(value: str) -> tuple[str, ...]:
    patterns = split_list(value)
    if not patterns:
        raise ValueError("expected one or more task-family patterns such as Backfill* or etl.*")
    return patterns


def parse_params(value: str) -> tuple[tuple[str, str], ...]:
    """``NAME=GLOB`` pairs: the task's parameter NAME must match GLOB (all pairs must hold)."""
    pairs = []
    for item in split_list(value):
        m = _PARAM.match(item)
        if not m:
            raise ValueError(f"expected NAME=PATTERN pairs such as env=prod region=eu-*, got {item!r}")
        pairs.append((m.group(1), m.group(2)))
    return tuple(pairs)


def parse_actions(value: str) -> tuple[str, ...]:
    actions = split_list(value)
    for action in actions:
        if action not in ACTIONS:
            raise ValueError(f"expected actions among {', '.join(ACTIONS)}, got {action!r}")
    if not actions:
        raise ValueError(f"expected one or more of {', '.join(ACTIONS)}")
    return tuple(dict.fromkeys(actions))


def parse_kinds(value: str) -> tuple[str, ...]:
    kinds = split_list(value)
    known = {k.value for k in Kind}
    for kind in kinds:
        if kind not in known:
            raise ValueError(f"expected kinds among person, service, agent, got {kind!r}")
    if not kinds:
        raise ValueError("expected one or more of person, service, agent")
    return tuple(dict.fromkeys(kinds))


def parse_approvers(value: str) -> tuple[Selector, ...]:
    approvers = selector_list("role", "group", "user")(value)
    if not approvers:
        raise ValueError("expected who may approve, e.g. group:data-owners or role:operator")
    return approvers


@dataclass(frozen=True)
class ApprovalsSettings:
    """``[approvals]``: kinds of principals and what applies to all rules."""

    agents: tuple[Selector, ...] = key(selector_list("user", "group"), (),
                                       "principals that are agents (automation acting on its own, AI agents): "
                                       "user:NAME or group:NAME, from the verified identity only")
    services: tuple[Selector, ...] = key(selector_list("user", "group"), (),
                                         "principals that are service accounts (user:NAME or group:NAME); "
                                         "everyone else is a person")
    propose_only: tuple[Selector, ...] = key(selector_list(), (),
                                             "principals whose add_task always opens a request, whatever the "
                                             "rules say: user:, group:, role: or kind:agent")
    propose_only_approvals: int = key(int_range(1, 10), 1,
                                      "approvals a request of a propose-only principal needs when no rule "
                                      "asks for more")
    propose_only_approvers: tuple[Selector, ...] = key(parse_approvers, (Selector("role", "operator"),),
                                                       "who may approve those requests")
    approver_kinds: tuple[str, ...] = key(parse_kinds, ("person",),
                                          "which kinds of principal may approve or deny at all, whatever the "
                                          "rules' approvers say: person, service, agent (propose-only "
                                          "principals never may)")
    notify_command: tuple[str, ...] | None = key(parse_command, None,
                                                 "a program run for each new request, the request as JSON "
                                                 "on its standard input (no shell)")
    notify_timeout: float = key(duration_range(1, 300), 10.0, "how long the notification program may run")
    fresh_login: float = key(duration_range(30, 86400), 900.0,
                             "a browser session older than this signs in again before it may decide")


@dataclass(frozen=True)
class ApprovalRuleSettings:
    """One ``[approval.NAME]`` section: which tasks it gates and who must approve them."""

    families: tuple[str, ...] = key(parse_families, (), "task-family patterns this rule gates; required")
    params: tuple[tuple[str, str], ...] = key(parse_params, (),
                                              "NAME=PATTERN pairs the task's parameters must all match "
                                              "(unset: any parameters)")
    requesters: tuple[Selector, ...] = key(selector_list(), (),
                                           "whose submissions it gates: kind:agent, kind:service, kind:person, "
                                           "role:, group:, user: (unset: everyone's)")
    approvals: int = key(int_range(1, 10), 1, "how many distinct approvers, none of them the requester")
    approvers: tuple[Selector, ...] = key(parse_approvers, (Selector("role", "operator"),),
                                          "who may approve: role:ROLE (or above), group:NAME, user:NAME")
    actions: tuple[str, ...] = key(parse_actions, ACTIONS, "what is gated: add_task (a new run) and the "
                                   "operator actions forgive_failures, re_enable_task, mark_as_done")
    request_expiry: float = key(duration_range(0, 90 * 86400), DEFAULT_REQUEST_EXPIRY,
                                "a request not decided within this fails its task (0: never)")
    approval_expiry: float = key(duration_range(0, 90 * 86400), 0.0,
                                 "an approved task that has not started within this fails (0: never)")

    def matches_task(self, family: str, params: dict[str, str]) -> bool:
        if not any(fnmatch.fnmatchcase(family, p) for p in self.families):
            return False
        return all(name in params and fnmatch.fnmatchcase(str(params[name]), pattern)
                   for name, pattern in self.params)


def _check_rules(loader: SchemaLoader) -> None:
    for name in loader.members(APPROVAL):
        where = f"approval.{name}"
        # In values with the default (): not written; an invalid value is reported by its parser.
        if (where, "families") in loader.values and not loader.values[(where, "families")]:
            file, line = loader.doc.sections[where]
            loader.issues.append(ConfigIssue(file, line, where, "families",
                                             f"[{where}] needs families = PATTERNS (the task families it gates)"))


APPROVALS = section("approvals", ApprovalsSettings)
APPROVAL = section_family("approval", ApprovalRuleSettings, _check_rules)


@dataclass(frozen=True)
class ApprovalPolicy:
    """``[approvals]`` and every ``[approval.NAME]``, as ``serve`` uses them."""

    settings: ApprovalsSettings = field(default_factory=ApprovalsSettings)
    rules: dict[str, ApprovalRuleSettings] = field(default_factory=dict)

    @property
    def enabled(self) -> bool:
        return bool(self.rules) or bool(self.settings.propose_only)


__all__ = ["ACTIONS", "APPROVAL", "APPROVALS", "ApprovalPolicy", "ApprovalRuleSettings", "ApprovalsSettings"]
