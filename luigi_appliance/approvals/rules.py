"""Which requests a submission needs: the principal's kind, the rules that match, propose-only."""

from __future__ import annotations

from dataclasses import dataclass

from luigi_appliance.approvals.book import Requirement
from luigi_appliance.approvals.selectors import Kind, any_matches
from luigi_appliance.approvals.settings import DEFAULT_REQUEST_EXPIRY, ApprovalPolicy
from luigi_appliance.auth import Principal

PROPOSE_ONLY_RULE = "propose-only"


@dataclass(frozen=True)
class Gate:
    """What a submission must wait for: the requirements, and the deadlines of its request."""

    requirements: tuple[Requirement, ...]
    request_expiry: float
    approval_expiry: float


class ApprovalRules:
    """``[approvals]`` and the ``[approval.NAME]`` rules, asked about one principal and one task."""

    def __init__(self, policy: ApprovalPolicy):
        self.policy = policy

    def kind(self, principal: Principal) -> Kind:
        """Agent, service account or person: from the verified name and groups, never from the
        client's word. An identity listed as both is an agent (the stricter)."""
        settings = self.policy.settings
        if any_matches(settings.agents, principal):
            return Kind.AGENT
        if any_matches(settings.services, principal):
            return Kind.SERVICE
        return Kind.PERSON

    def propose_only(self, principal: Principal) -> bool:
        return any_matches(self.policy.settings.propose_only, principal, self.kind(principal))

    def decider_refusal(self, principal: Principal) -> str | None:
        """Why ``principal`` may not approve or deny anything, or None. Agents (and by default
        service accounts) never decide, whatever the rules' approvers say: an agent must not
        approve another agent's work, and a password a script keeps is no person's decision."""
        kind = self.kind(principal)
        if kind.value not in self.policy.settings.approver_kinds:
            allowed = ", ".join(self.policy.settings.approver_kinds)
            return (f"{principal.name} is a{'n' if kind is Kind.AGENT else ''} {kind} principal and may not decide "
                    f"approvals ([approvals] approver_kinds = {allowed})")
        if self.propose_only(principal):
            return f"{principal.name} may only propose work ([approvals] propose_only), not decide it"
        return None

    def gate(self, principal: Principal, action: str, family: str, params: dict[str, str]) -> Gate | None:
        """The gate ``principal``'s ``action`` on a task of ``family`` with ``params`` must pass, or
        None when it runs at once. Every matching rule must be satisfied; the earliest deadline wins."""
        kind = self.kind(principal)
        requirements: list[Requirement] = []
        request_expiry: list[float] = []
        approval_expiry: list[float] = []
        for name, rule in self.policy.rules.items():
            if action not in rule.actions or not rule.matches_task(family, params):
                continue
            if rule.requesters and not any_matches(rule.requesters, principal, kind):
                continue
            requirements.append(Requirement(name, rule.approvals, rule.approvers))
            if rule.request_expiry > 0:
                request_expiry.append(rule.request_expiry)
            if rule.approval_expiry > 0:
                approval_expiry.append(rule.approval_expiry)
        if action == "add_task" and self.propose_only(principal) and not requirements:
            settings = self.policy.settings
            requirements.append(Requirement(PROPOSE_ONLY_RULE, settings.propose_only_approvals,
                                            settings.propose_only_approvers))
            request_expiry.append(DEFAULT_REQUEST_EXPIRY)
        if not requirements:
            return None
        return Gate(tuple(requirements), min(request_expiry, default=0.0), min(approval_expiry, default=0.0))
