"""Luigi's visualiser, kept working behind POST-only mutations and a strict CSP.

The visualiser calls every RPC with GET, including pause, mark_as_done and the other actions the
guard now refuses as GET. Rather than fork Luigi's JavaScript, the appliance serves Luigi's own
index.html with one extra script that turns those calls into POSTs (a jQuery prefilter), and
computes the CSP hash of the page's single inline script from the file itself, so no
'unsafe-inline' is needed for scripts.

The shim is loaded right after jQuery, before any of luigi's scripts, so no call can leave
the page before the prefilter is in place; ``window.luigiAppliance.ready`` says when the page's
scripts are all loaded. A refused state-changing call shows the refusal on the page, and the
pause toggle (the one control luigi flips before the answer) is set back to the scheduler's state.

Each request gets the page with the appliance's header (server/page_header.py: banner, user and
role, logout for a session), the session's CSRF token in a ``<meta>`` tag (the shim sends it
with every state-changing call, and opens the login form when a call answers 401), the RPC
methods the role may call, and CSS hiding luigi's controls for the others (``CONTROLS``).

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
from luigi_appliance.auth.session import CSRF_HEADER
from luigi_appliance.errors import ApplianceError
from luigi_appliance.luigi_internals.server import VISUALISER_DIR
from luigi_appliance.server.guard import GuardMixin
from luigi_appliance.server.page_header import PRODUCT, PageHeader, Visitor, page_header
from luigi_appliance.server.page_header import STYLE as HEADER_STYLE

INDEX_PATH = os.path.join(VISUALISER_DIR, "index.html")
JQUERY_TAG = '<script src="lib/jquery-1.10.0.min.js"></script>'
SHIM_TAG = '<script src="../../appliance/visualiser-post.js"></script>'
CSRF_META = "luigi-appliance-csrf-token"
UI_META = "luigi-appliance-ui"
HEAD_SLOT = "<!-- luigi-appliance: page data -->"
HEADER_SLOT = "<!-- luigi-appliance: header -->"
_INLINE_SCRIPT = re.compile(r"<script>(.*?)</script>", re.S)

# luigi's controls (index.html, visualiserApp.js) by the RPC methods they call: hidden for a
# role the policy does not let call them. The guard refuses such calls anyway; this only keeps
# a viewer from being offered buttons that cannot work.
CONTROLS: dict[str, str] = {
    "pause": "#pause-form",
    "unpause": "#pause-form",
    "forgive_failures": ".forgiveFailures",
    "re_enable_task": ".re-enable-button",
    "mark_as_done": ".markAsDone",
    "disable_worker": "#workerList .button-tooltip, .btn-disable-worker",
    "set_worker_processes": ".btn-set-workers",
    "update_resource": "#resourceList .btn-set-resources",
    "send_scheduler_message": ".schedulerMessage",
}

# (luigi's index.html, the appliance's): each must occur exactly once.
INDEX_PATCHES: list[tuple[str, str]] = [
    # The POST shim right after jQuery, before any of luigi's scripts can call the API.
    (JQUERY_TAG, f"{JQUERY_TAG}\n        {SHIM_TAG}"),
    ("</head>", f"    {HEAD_SLOT}\n    </head>"),
    ('<a class="logo" href="#">Luigi Task Status</a>', f'<a class="logo" href="#">{PRODUCT}</a>'),
    ('<form class="navbar-form navbar-right" id="pause-form">',
     f'<div class="navbar-right">{HEADER_SLOT}</div>\n'
     '                            <form class="navbar-form navbar-right" id="pause-form">'),
    # The error pop-up's re-run hint: workers run through the appliance's client, not stock luigi.
    ("<pre class=\"pre-scrollable\">luigi --module {{taskModule}}",
     "<pre class=\"pre-scrollable\">luigi-appliance run --module {{taskModule}}"),
]

PAGE_STYLE = """
#appliance-header { min-height: 50px; }
#appliance-refusal { position: fixed; top: 60px; left: 50%; transform: translateX(-50%); z-index: 2000;
  max-width: 60em; padding: 10px 16px; border-radius: 3px; cursor: pointer; box-shadow: 0 2px 8px rgba(0, 0, 0, .3);
  background: #dd4b39; color: #fff; font-weight: bold; }
"""


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
    """Luigi's index.html with the POST shim loaded right after jQuery, slots for the header and
    the per-request page data, and the appliance's re-run hint."""
    for old, new in INDEX_PATCHES:
        if html.count(old) != 1:
            raise ApplianceError(f"{INDEX_PATH} does not contain {old!r} exactly once: this luigi version's "
                                 "visualiser is not supported")
        html = html.replace(old, new, 1)
    return html


def hidden_controls(visitor: Visitor) -> str:
    """CSS hiding luigi's controls for the methods ``visitor``'s role may not call."""
    may = set(visitor.may_call())
    selectors = sorted({CONTROLS[name] for name in CONTROLS if name not in may})
    return "".join(f"{selector} {{ display: none !important; }}\n" for selector in selectors)


def page_data(visitor: Visitor | None) -> str:
    """What the page's scripts read: the session's CSRF token, who this is and what they may call."""
    if visitor is None:
        return ""
    data = json.dumps({"user": visitor.name, "role": str(visitor.role), "may": visitor.may_call()})
    tags = [f'<meta name="{UI_META}" content="{escape(data, quote=True)}">',
            f"<style>{HEADER_STYLE}{PAGE_STYLE}{hidden_controls(visitor)}</style>"]
    if visitor.csrf_token is not None:
        tags.insert(0, f'<meta name="{CSRF_META}" content="{escape(visitor.csrf_token, quote=True)}">')
    return "\n    ".join(tags)


def render_index(page: str, header: PageHeader, visitor: Visitor | None) -> str:
    return (page.replace(HEAD_SLOT, page_data(visitor), 1)
            .replace(HEADER_SLOT, header.html(visitor, product_link=None), 1))


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


_SHIM = r"""// luigi-appliance: state-changing RPCs are POST-only; luigi.js sends them as GET.
(function ($) {
  var mutating = MUTATING;
  // The tests (and anyone debugging) wait for this rather than for luigi's scripts: once ready,
  // every call the page makes goes through the prefilter below.
  var appliance = window.luigiAppliance = {ready: false};
  function csrfToken() {
    var meta = document.querySelector('meta[name="CSRF_META"]');
    return meta ? meta.getAttribute('content') : null;
  }
  function methodOf(url) {
    var m = /\/api\/([A-Za-z_]+)$/.exec(String(url).split('?')[0]);
    return m ? m[1] : null;
  }
  $.ajaxPrefilter(function (options, original, xhr) {
    var name = methodOf(options.url);
    if (name && mutating[name]) { options.type = 'POST'; }
    var token = csrfToken();
    // Same-origin calls only (luigi.js calls ../../api): the token never leaves the site.
    if (token && !options.crossDomain) { xhr.setRequestHeader('CSRF_HEADER', token); }
  });
  function reasonOf(xhr) {
    try { return JSON.parse(xhr.responseText).reason || xhr.statusText; } catch (e) { return xhr.statusText; }
  }
  // luigi's pages only update themselves when a call succeeds, except the pause toggle, which
  // has flipped already: it is set back to what the scheduler says.
  function rereadPause() {
    new LuigiAPI('../../api').isPaused(function (running) {
      var toggle = $('#pause').data('bs.toggle');
      if (toggle) { if (running) { toggle.on(true); } else { toggle.off(true); } }
    });
  }
  function showRefusal(name, xhr) {
    var box = document.getElementById('appliance-refusal');
    if (!box) {
      box = document.createElement('div');
      box.id = 'appliance-refusal';
      box.setAttribute('role', 'alert');
      box.title = 'Click to dismiss';
      box.onclick = function () { box.style.display = 'none'; };
      document.body.appendChild(box);
    }
    box.textContent = 'The scheduler refused ' + name + ': ' + reasonOf(xhr) + ' (HTTP ' + xhr.status + ').';
    box.style.display = 'block';
  }
  $(document).ajaxError(function (event, xhr, settings) {
    // 401: the session ended (idle or absolute timeout, logout elsewhere): log in again.
    if (xhr.status === 401 && csrfToken()) {
      var here = location.pathname + location.search + location.hash;
      location.assign('../../login?next=' + encodeURIComponent(here));
      return;
    }
    var name = methodOf(settings.url);
    if (!name || !mutating[name] || xhr.status === 0) { return; }  // 0: aborted, e.g. leaving the page
    showRefusal(name, xhr);
    if (name === 'pause' || name === 'unpause') { rereadPause(); }
  });
  $(function () { appliance.ready = true; });
})(jQuery);
"""


def shim_script() -> str:
    mutating = {name: True for name, rule in sorted(policy.RPC_METHODS.items()) if rule.mutates}
    return (_SHIM.replace("MUTATING", json.dumps(mutating)).replace("CSRF_META", CSRF_META)
            .replace("CSRF_HEADER", CSRF_HEADER))


class IndexHandler(GuardMixin):
    def initialize(self, html: str) -> None:
        self._html = html

    def get(self) -> None:
        header = page_header(self)
        self.set_header("Content-Type", "text/html; charset=UTF-8")
        self.finish(render_index(self._html, header, header.visitor(self, self.principal)))


class ShimHandler(GuardMixin):
    """Serves one script made at start: the POST shim, or one of luigi's scripts patched."""

    def initialize(self, script: str) -> None:
        self._script = script

    def get(self) -> None:
        self.set_header("Content-Type", "application/javascript; charset=UTF-8")
        self.finish(self._script)


def routes() -> tuple[str, list[tuple[str, type[tornado.web.RequestHandler], dict]]]:
    """(CSP, handlers) for the visualiser's entry page, its shim and the patched scripts."""
    html = read_index()
    return content_security_policy(html), [
        (r"/static/visualiser/index\.html", IndexHandler, {"html": patched_index(html)}),
        (r"/appliance/visualiser-post\.js", ShimHandler, {"script": shim_script()}),
        *[("/static/visualiser/" + re.escape(relative), ShimHandler, {"script": patched_script(relative)})
          for relative in SCRIPT_PATCHES],
    ]
