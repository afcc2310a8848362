"""Luigi's visualiser, kept working behind POST-only mutations and a strict CSP.

The visualiser calls every RPC with GET, including pause, mark_as_done and the other actions the
guard now refuses as GET. Rather than fork Luigi's JavaScript, the appliance serves Luigi's own
index.html with one extra script that turns those calls into POSTs (a jQuery prefilter), and
computes the CSP hash of the page's single inline script from the file itself, so no
'unsafe-inline' is needed for scripts.

For a browser logged in through /login, the page also carries the session's CSRF token in a
``<meta>`` tag; the shim sends it with every state-changing call, adds a "Log out" button, and
opens the login form when a call answers 401 (the session ended).

Luigi's scripts also put some task fields into the page as markup: the task name (family) and
resources in the task table, the refreshed status message, scheduler message responses, the
node labels and tooltips of both graph views. Any worker sets those, so a status message
``<img src=x>`` would become an element in every viewer's page (the CSP keeps its scripts from
running, but not forms, links or styles). The appliance serves those two scripts, at their own
URLs, with exactly these places changed to render text (``SCRIPT_PATCHES``); a luigi version
whose scripts no longer contain them is refused at start rather than served unpatched.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
from html import escape

import tornado.web

from luigi_appliance import policy
from luigi_appliance.auth.session import CSRF_HEADER, SessionAuthenticator
from luigi_appliance.errors import ApplianceError
from luigi_appliance.luigi_internals.server import VISUALISER_DIR
from luigi_appliance.server.guard import GuardMixin

INDEX_PATH = os.path.join(VISUALISER_DIR, "index.html")
SHIM_TAG = '<script src="../../appliance/visualiser-post.js"></script>'
CSRF_META = "luigi-appliance-csrf-token"
CSRF_SLOT = "<!-- luigi-appliance: csrf token -->"
_INLINE_SCRIPT = re.compile(r"<script>(.*?)</script>", re.S)


_TEXT_HELPERS = """function visualiserApp(luigi) {
    // luigi-appliance: task fields are text, never markup.
    function applianceText(value) {
        var entities = {'&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;'};
        return String(value === null || value === undefined ? '' : value).replace(/[&<>"']/g, function (c) {
            return entities[c];
        });
    }
    function applianceCell(data, type) {
        return type === 'display' ? applianceText(data) : data;
    }
"""

# Script (relative to luigi's visualiser directory) -> (luigi's code, the appliance's): each
# piece of luigi's code must occur exactly once.
SCRIPT_PATCHES: dict[str, list[tuple[str, str]]] = {
    "js/visualiserApp.js": [
        ("function visualiserApp(luigi) {\n", _TEXT_HELPERS),
        ("{data: 'taskName'},", "{data: 'taskName', render: applianceCell},"),
        ('{data: \'priority\', width: "2em"},', '{data: \'priority\', width: "2em", render: applianceCell},'),
        ("'</div><div>' + row.resources + '</div>'", "'</div><div>' + applianceText(row.resources) + '</div>'"),
        # escapeHtml (util.js) throws on anything but a string, which empties the whole table.
        ("escapeHtml(key) +", "applianceText(key) +"),
        ("escapeHtml(params[key])", "applianceText(params[key])"),
        ('pre").html(data.statusMessage)', 'pre").text(data.statusMessage)'),
        ("$responseContent.html(response);", "$responseContent.text(response);"),
        ("data-task-id='\" + task.taskId + \"'>\"", "data-task-id='\" + applianceText(task.taskId) + \"'>\""),
        ('"<span class=name>"+task.name+"</span>"', '"<span class=name>"+applianceText(task.name)+"</span>"'),
        ('<span class=counter>"+ task.status +"</span>', '<span class=counter>"+ applianceText(task.status) +"</span>'),
        ("\"<p class='name'>\" + name + \"</p>", "\"<p class='name'>\" + applianceText(name) + \"</p>"),
        ("'description'>\" + description + \"</p>\"", "'description'>\" + applianceText(description) + \"</p>\""),
    ],
    # The popover of the default graph view renders its title (the task name) as HTML.
    "js/graph.js": [
        ("var titleText = node.name;", "var titleText = escapeHtml(String(node.name || ''));"),
    ],
}


def read_index() -> str:
    with open(INDEX_PATH, encoding="utf-8") as fh:
        return fh.read()


def patched_script(relative: str) -> str:
    """Luigi's ``relative`` script with the appliance's changes; fails on a luigi version whose
    script differs where a change applies."""
    with open(os.path.join(VISUALISER_DIR, relative), encoding="utf-8") as fh:
        script = fh.read()
    for old, new in SCRIPT_PATCHES[relative]:
        if script.count(old) != 1:
            raise ApplianceError(f"{os.path.join(VISUALISER_DIR, relative)} does not contain {old.strip()!r} exactly "
                                 "once: this luigi version's visualiser is not supported")
        script = script.replace(old, new, 1)
    return script


def patched_index(html: str) -> str:
    """Luigi's index.html with the POST shim loaded right after jQuery (in <head>), and a slot
    for the session's CSRF token before it."""
    if "</head>" not in html:
        raise ApplianceError(f"{INDEX_PATH} has no </head>: this luigi version's visualiser is not supported")
    return html.replace("</head>", f"    {CSRF_SLOT}\n    {SHIM_TAG}\n    </head>", 1)


def with_csrf_token(page: str, token: str | None) -> str:
    if token is None:
        return page.replace(CSRF_SLOT, "", 1)
    meta = f'<meta name="{CSRF_META}" content="{escape(token, quote=True)}">'
    return page.replace(CSRF_SLOT, meta, 1)


def inline_script_hashes(html: str) -> list[str]:
    return ["'sha256-" + base64.b64encode(hashlib.sha256(body.encode("utf-8")).digest()).decode() + "'"
            for body in _INLINE_SCRIPT.findall(html)]


def content_security_policy(html: str) -> str:
    scripts = " ".join(["'self'", *inline_script_hashes(html)])
    return "; ".join([
        "default-src 'self'",
        f"script-src {scripts}",
        # The visualiser's markup and its libraries (bootstrap, datatables, d3) use style attributes.
        "style-src 'self' 'unsafe-inline'",
        "img-src 'self' data:",
        "font-src 'self' data:",
        "connect-src 'self'",
        "object-src 'none'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    ])


def shim_script() -> str:
    mutating = sorted(name for name, rule in policy.RPC_METHODS.items() if rule.mutates)
    return (
        "// luigi-appliance: state-changing RPCs are POST-only; luigi.js sends them as GET.\n"
        "(function ($) {\n"
        f"  var mutating = {json.dumps({name: True for name in mutating})};\n"
        "  function csrfToken() {\n"
        f"    var meta = document.querySelector('meta[name=\"{CSRF_META}\"]');\n"
        "    return meta ? meta.getAttribute('content') : null;\n"
        "  }\n"
        "  $.ajaxPrefilter(function (options, original, xhr) {\n"
        "    var m = /\\/api\\/([A-Za-z_]+)$/.exec(String(options.url).split('?')[0]);\n"
        "    if (m && mutating[m[1]]) { options.type = 'POST'; }\n"
        "    var token = csrfToken();\n"
        "    // Same-origin calls only (luigi.js calls ../../api): the token never leaves the site.\n"
        f"    if (token && !options.crossDomain) {{ xhr.setRequestHeader('{CSRF_HEADER}', token); }}\n"
        "  });\n"
        "  // 401: the session ended (idle or absolute timeout, logout elsewhere): log in again.\n"
        "  $(document).ajaxError(function (event, xhr) {\n"
        "    if (xhr.status === 401 && csrfToken()) {\n"
        "      var here = location.pathname + location.search + location.hash;\n"
        "      location.assign('../../login?next=' + encodeURIComponent(here));\n"
        "    }\n"
        "  });\n"
        "  $(function () {\n"
        "    var token = csrfToken();\n"
        "    if (!token) { return; }\n"
        "    var form = document.createElement('form');\n"
        "    form.method = 'post'; form.action = '../../logout'; form.id = 'appliance-logout';\n"
        "    form.className = 'navbar-form navbar-right';\n"
        "    var field = document.createElement('input');\n"
        "    field.type = 'hidden'; field.name = 'csrf_token'; field.value = token;\n"
        "    var button = document.createElement('button');\n"
        "    button.type = 'submit'; button.className = 'btn btn-default btn-sm'; button.textContent = 'Log out';\n"
        "    form.appendChild(field); form.appendChild(button);\n"
        "    var pause = document.getElementById('pause-form');\n"
        "    if (pause && pause.parentNode) { pause.parentNode.insertBefore(form, pause); }\n"
        "    else { document.body.appendChild(form); }\n"
        "  });\n"
        "})(jQuery);\n"
    )


class IndexHandler(GuardMixin):
    def initialize(self, html: str, sessions: SessionAuthenticator | None) -> None:
        self._html = html
        self._sessions = sessions

    def get(self) -> None:
        # Only a session needs the token: Basic and bearer callers are not browsers riding a cookie.
        found = self._sessions.lookup(self.request) if self._sessions is not None else None
        self.set_header("Content-Type", "text/html; charset=UTF-8")
        self.finish(with_csrf_token(self._html, found[1].csrf_token if found else None))


class ShimHandler(GuardMixin):
    """Serves one script made at start: the POST shim, or one of luigi's scripts patched."""

    def initialize(self, script: str) -> None:
        self._script = script

    def get(self) -> None:
        self.set_header("Content-Type", "application/javascript; charset=UTF-8")
        self.finish(self._script)


def routes(sessions: SessionAuthenticator | None = None
           ) -> tuple[str, list[tuple[str, type[tornado.web.RequestHandler], dict]]]:
    """(CSP, handlers) for the visualiser's entry page, its shim and the patched scripts."""
    html = read_index()
    return content_security_policy(html), [
        (r"/static/visualiser/index\.html", IndexHandler, {"html": patched_index(html), "sessions": sessions}),
        (r"/appliance/visualiser-post\.js", ShimHandler, {"script": shim_script()}),
        *[("/static/visualiser/" + re.escape(relative), ShimHandler, {"script": patched_script(relative)})
          for relative in SCRIPT_PATCHES],
    ]
