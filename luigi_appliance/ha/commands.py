"""``luigi-appliance ha status``: what every node of an HA scheduler pair says about itself.

Asks ``GET /healthz/leader`` of each scheduler URL client.conf names (or ``--scheduler-url``
gives), all at once, with client.conf's CA and timeout; the route needs no credentials. Prints
one row per URL: the node's name, role, epoch, the leader it knows, how far its journal is
behind, or why it could not be asked. Exit 0 when exactly one node says it leads, 1 otherwise
(none: a failover under way or no node up; two: split brain, which the lease's fencing should
make impossible), so a monitoring check can run it as it is.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from luigi_appliance.client.settings import ClientSettings

LEADER_PATH = "healthz/leader"
EXIT_ONE_LEADER = 0
EXIT_NOT_ONE_LEADER = 1


@dataclasses.dataclass(frozen=True)
class NodeReport:
    """One URL's answer to /healthz/leader (the fields of ha/status.py's NodeStatus), or the
    error asking it (``role`` None then)."""

    url: str
    role: str | None = None
    node: str | None = None
    epoch: int | None = None
    leader: str | None = None
    leader_url: str | None = None
    applied_pos: int | None = None
    lag_records: int | None = None
    lag_seconds: float | None = None
    detail: str | None = None
    error: str | None = None

    @property
    def leading(self) -> bool:
        return self.role == "leader"


# What an answer may hold, with the type each value must have (anything else is ignored).
_FIELDS: dict[str, tuple[type, ...]] = {
    "role": (str,), "node": (str,), "epoch": (int,), "leader": (str,), "leader_url": (str,),
    "applied_pos": (int,), "lag_records": (int,), "lag_seconds": (int, float), "detail": (str,),
}


def ask(url: str, verify: str | bool, timeout: float) -> NodeReport:
    """What the scheduler at ``url`` says on /healthz/leader (200 on the leader, 503 otherwise,
    the same JSON either way)."""
    import requests

    from luigi_appliance.client.scheduler_errors import describe

    try:
        resp = requests.get(url + LEADER_PATH, verify=verify, timeout=timeout, allow_redirects=False)
    except requests.RequestException as exc:
        return NodeReport(url, error=f"cannot reach it: {describe(exc)}")
    try:
        body = resp.json()
    except ValueError:
        body = None
    if not isinstance(body, dict) or not isinstance(body.get("role"), str):
        return NodeReport(url, error=f"answered {resp.status_code} without a node status: not a luigi-appliance "
                          "scheduler, or one too old for /healthz/leader")
    values = {name: body[name] for name, types in _FIELDS.items()
              if isinstance(body.get(name), types) and not isinstance(body.get(name), bool)}
    return NodeReport(url, **values)


def ask_all(urls: tuple[str, ...], verify: str | bool, timeout: float) -> list[NodeReport]:
    """Every URL's report, in the order given; all asked at once (a node that does not answer
    costs one timeout, not one per node)."""
    with ThreadPoolExecutor(max_workers=len(urls)) as pool:
        return list(pool.map(lambda url: ask(url, verify, timeout), urls))


def leaders(reports: list[NodeReport]) -> list[str]:
    """The nodes saying they lead, each once (a node reached by two URLs, a VIP and its own
    name, is one node; a scheduler without [ha] has no name and counts per URL)."""
    named = [r.node or r.url for r in reports if r.leading]
    return list(dict.fromkeys(named))


def render(reports: list[NodeReport]) -> str:
    """The table, and a line saying which node leads."""
    from luigi_appliance.operator.table import columns

    rows = [(r.url, r.node, r.role or "error", r.epoch, r.leader, r.lag_records,
             None if r.lag_seconds is None else f"{r.lag_seconds:.1f}", r.error or r.detail) for r in reports]
    table = columns(["URL", "NODE", "ROLE", "EPOCH", "LEADER", "LAG RECORDS", "LAG SECONDS", "DETAIL"], rows)
    found = leaders(reports)
    if len(found) == 1:
        verdict = f"leader: {found[0]}"
    elif not found:
        verdict = "no node says it leads"
    else:
        verdict = f"{len(found)} nodes say they lead: {', '.join(found)}"
    return f"{table}\n{verdict}"


def _settings(args: argparse.Namespace) -> ClientSettings:
    from luigi_appliance.client.settings import load_client_settings

    overrides = {}
    if args.scheduler_url:
        overrides["scheduler_url"] = " ".join(args.scheduler_url)
    if args.ca_file is not None:
        overrides["ca_file"] = str(args.ca_file)
    return load_client_settings(args.client_config, overrides)


def cmd_status(args: argparse.Namespace) -> int:
    settings = _settings(args)
    verify: str | bool = str(settings.ca_file) if settings.ca_file else True
    reports = ask_all(settings.scheduler_urls, verify, settings.connect_timeout)
    if args.json:
        print(json.dumps([dataclasses.asdict(r) for r in reports], indent=2, sort_keys=True))
    else:
        print(render(reports))
    return EXIT_ONE_LEADER if len(leaders(reports)) == 1 else EXIT_NOT_ONE_LEADER


def add_parsers(sub: Any) -> None:
    """``ha status`` into the top-level subparsers ``sub``."""
    ha = sub.add_parser("ha", help="the nodes of a high-availability scheduler pair")
    ha_sub = ha.add_subparsers(dest="ha_command", required=True)
    status = ha_sub.add_parser(
        "status", help="each node's role, epoch, leader and journal lag, from its /healthz/leader (no "
        "credentials needed); exit 0 when exactly one node leads, 1 otherwise",
        description="Ask GET /healthz/leader of every scheduler URL (client.conf's scheduler_url, or "
        "--scheduler-url) and print one row per URL. Exit status: 0 exactly one node says it leads; 1 none "
        "or several do, or a configuration error; 2 a usage error.")
    status.add_argument("--scheduler-url", action="append", metavar="URL",
                        help="a node's https://HOST:PORT/ (repeat it, or separate URLs by commas; "
                        "default: client.conf's scheduler_url)")
    status.add_argument("--ca-file", type=Path, help="CA certificate(s) to verify the schedulers with")
    status.add_argument("--client-config", type=Path, help="client.conf (default /etc/luigi-appliance/client.conf)")
    status.add_argument("--json", action="store_true", help="print a JSON list, one object per URL")
    status.set_defaults(func=cmd_status)
