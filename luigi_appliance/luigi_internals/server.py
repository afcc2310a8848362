"""luigi's Tornado app taken apart: its routes and settings, its RPC handler, its static files."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import luigi
import luigi.server
import tornado.web
from tornado.routing import Rule

# Where luigi keeps its visualiser (index.html, js/, lib/).
VISUALISER_DIR = os.path.join(os.path.dirname(luigi.__file__), "static", "visualiser")

# Tornado adds these itself from the static_path setting, with static_handler_class.
_STATIC_PATTERNS = {"/static/(.*)$", "/(favicon\\.ico)$", "/(robots\\.txt)$"}


class _RPCHandler(luigi.server.RPCHandler):
    """Luigi's RPC handler without its per-request ``cors()`` lookup.

    luigi.server.RPCHandler.__init__ builds its [cors] Config on every request, which re-reads
    luigi's configuration parameter by parameter: about a fifth of the scheduler thread's time
    under load. The appliance ignores luigi's configuration files, so it is read once here.
    """

    def __init__(self, application: tornado.web.Application, request: Any, **kwargs: Any):
        tornado.web.RequestHandler.__init__(self, application, request, **kwargs)

    def initialize(self, scheduler: Any, cors_config: Any = None) -> None:
        super().initialize(scheduler)
        self._cors_config = cors_config


@dataclass(frozen=True)
class LuigiApp:
    """luigi's app for one scheduler: its own routes (static files aside) and its settings."""

    handlers: list[tuple[str, type, dict[str, Any]]]
    settings: dict[str, Any]


def route_pattern(rule: Rule) -> str:
    """The regular expression a route of a Tornado app matches."""
    return rule.matcher.regex.pattern  # type: ignore[attr-defined]


def luigi_app(scheduler: Any) -> LuigiApp:
    """The routes luigi's server would serve for ``scheduler``, with its RPC handler replaced by
    one that reads luigi's [cors] configuration once; the static routes are Tornado's to add."""
    stock = luigi.server.app(scheduler)
    cors_config = luigi.server.cors()
    handlers: list[tuple[str, type, dict[str, Any]]] = []
    for rule in stock.wildcard_router.rules:
        pattern = route_pattern(rule)
        if pattern in _STATIC_PATTERNS:
            continue
        target, kwargs = rule.target, rule.target_kwargs
        if target is luigi.server.RPCHandler:
            target, kwargs = _RPCHandler, {**kwargs, "cors_config": cors_config}
        handlers.append((pattern, target, kwargs))
    return LuigiApp(handlers, dict(stock.settings))
