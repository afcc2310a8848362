"""Approval gates: no gated task runs until the principals its rules name have approved it.

- ``settings.py``: ``[approvals]`` (who is an agent or a service account, who may only propose,
  the notification command) and ``[approval.NAME]`` rules (families, parameters, requesters,
  how many approvals from whom, expiries, gated actions).
- ``selectors.py``: ``user:``, ``group:``, ``role:``, ``kind:`` matched on the verified principal.
- ``rules.py``: a principal's kind, and the requirements a submission must meet.
- ``book.py``: the requests and decisions (distinct approvers, never the requester, break-glass),
  exported whole into the signed snapshot.
- ``events.py`` and ``notify.py``: the audit trail, the log, the notification command.

The scheduler applies them (luigi_appliance/scheduler/approval_gate.py); the API, the pages and
the CLI decide them (server/approvals_api.py, server/approvals_page.py, operator/). docs/approvals.md
is the sysadmin's guide.
"""
