"""The header every HTML page carries: product name, environment banner, who is logged in, logout.

The visualiser (server/visualiser.py), the history pages (history/pages.py) and the login form
(server/login.py) render the same markup from here, so a user sees on every page which scheduler
this is ([server] banner) and as whom and with which role they are working. Only a browser
session can log out (Basic and bearer callers send their credentials with every request), so
only a session's page gets the logout form, with the session's CSRF token.
"""

from __future__ import annotations

from dataclasses import dataclass
from html import escape

import tornado.web

from luigi_appliance import policy
from luigi_appliance.auth import Principal, Role
from luigi_appliance.auth.session import SessionAuthenticator
from luigi_appliance.server.settings import ServerSettings

PRODUCT = "luigi-appliance"
# The Application setting holding the PageHeader (app.build_app puts it there).
SETTING = "appliance_page_header"

# Inline (the CSP allows inline styles, not scripts); ids and classes are the tests' hooks too.
STYLE = """
#appliance-header { display: flex; align-items: center; gap: 12px; font: 14px/20px sans-serif;
  color: #fff; padding: 0 12px; min-height: 50px; }
#appliance-header .appliance-product { font-weight: bold; letter-spacing: .5px; }
#appliance-header .appliance-banner { color: #fff; font-weight: bold; padding: 2px 10px;
  border-radius: 3px; text-transform: uppercase; letter-spacing: 1px; }
#appliance-header .appliance-nav { color: #fff; text-decoration: underline; }
#appliance-header .appliance-user { margin-left: auto; }
#appliance-header .appliance-role { opacity: .85; }
#appliance-header form { margin: 0; }
#appliance-header button { font-size: 12px; padding: 2px 10px; color: #333; background: #f4f4f4;
  border: 1px solid #ccc; border-radius: 3px; cursor: pointer; }
"""


@dataclass(frozen=True)
class Banner:
    """[server] banner and banner_color: which environment this scheduler is."""

    text: str
    color: str


@dataclass(frozen=True)
class Visitor:
    """Who a page is for; ``csrf_token`` only for a browser session (which alone can log out)."""

    name: str
    role: Role
    csrf_token: str | None = None

    def may_call(self) -> list[str]:
        """The RPC methods this role may call (policy.RPC_METHODS), in order."""
        return sorted(name for name, rule in policy.RPC_METHODS.items() if self.role >= rule.role)


@dataclass(frozen=True)
class PageHeader:
    banner: Banner | None = None
    sessions: SessionAuthenticator | None = None

    def visitor(self, handler: tornado.web.RequestHandler, principal: Principal | None) -> Visitor | None:
        """``principal`` (the guard's) as the header shows it, with its session's CSRF token."""
        if principal is None:
            return None
        found = self.sessions.lookup(handler.request) if self.sessions is not None else None
        return Visitor(principal.name, principal.role, found[1].csrf_token if found else None)

    def html(self, visitor: Visitor | None, *, product_link: str | None = "/") -> str:
        """The header's markup: every value in it is escaped text. ``product_link`` None: the
        page names the product itself (the visualiser's logo)."""
        parts = [] if product_link is None else [f'<a class="appliance-product" style="color: inherit" '
                                                 f'href="{escape(product_link, quote=True)}">{PRODUCT}</a>']
        if self.banner is not None:
            parts.append(f'<span class="appliance-banner" id="appliance-banner" '
                         f'style="background: {self.banner.color}">{escape(self.banner.text)}</span>')
        if visitor is not None:
            # Every signed-in role may look at the requests (the book decides who may decide).
            parts.append('<a class="appliance-nav" id="appliance-approvals" href="/approvals">Approvals</a>')
            parts.append(f'<span class="appliance-user" id="appliance-user">{escape(visitor.name)} '
                         f'<span class="appliance-role">({visitor.role})</span></span>')
            if visitor.csrf_token is not None:
                parts.append('<form id="appliance-logout" method="post" action="/logout">'
                             f'<input type="hidden" name="csrf_token" value="{escape(visitor.csrf_token, quote=True)}">'
                             '<button type="submit">Log out</button></form>')
        return '<div id="appliance-header">' + "".join(parts) + "</div>"


def page_header(handler: tornado.web.RequestHandler) -> PageHeader:
    """The application's header settings (none in an app built without them)."""
    return handler.application.settings.get(SETTING) or PageHeader()


def banner_of(server: ServerSettings) -> Banner | None:
    """[server] banner and banner_color; None without a banner."""
    return Banner(server.banner, server.banner_color) if server.banner else None
