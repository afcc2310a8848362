"""Luigi's visualiser, kept working behind POST-only mutations and a strict CSP.

The visualiser calls every RPC with GET, including pause, mark_as_done and the other actions the
guard now refuses as GET. Rather than fork Luigi's JavaScript, the appliance serves Luigi's own
index.html with one extra script that turns those calls into POSTs (a jQuery prefilter), and
computes the CSP hash of the page's single inline script from the file itself, so no
'unsafe-inline' is needed for scripts.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re

import luigi
import tornado.web

from luigi_appliance import policy
from luigi_appliance.errors import ApplianceError
from luigi_appliance.server.guard import GuardMixin

INDEX_PATH = os.path.join(os.path.dirname(luigi.__file__), "static", "visualiser", "index.html")
SHIM_TAG = '<script src="../../appliance/visualiser-post.js"></script>'
_INLINE_SCRIPT = re.compile(r"<script>(.*?)</script>", re.S)


def read_index() -> str:
    with open(INDEX_PATH, encoding="utf-8") as fh:
        return fh.read()


def patched_index(html: str) -> str:
    """Luigi's index.html with the POST shim loaded right after jQuery (in <head>)."""
    if "</head>" not in html:
        raise ApplianceError(f"{INDEX_PATH} has no </head>: this luigi version's visualiser is not supported")
    return html.replace("</head>", f"    {SHIM_TAG}\n    </head>", 1)


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
        "  $.ajaxPrefilter(function (options) {\n"
        "    var m = /\\/api\\/([A-Za-z_]+)$/.exec(String(options.url).split('?')[0]);\n"
        "    if (m && mutating[m[1]]) { options.type = 'POST'; }\n"
        "  });\n"
        "})(jQuery);\n"
    )


class IndexHandler(GuardMixin):
    def initialize(self, html: str) -> None:
        self._html = html

    def get(self) -> None:
        self.set_header("Content-Type", "text/html; charset=UTF-8")
        self.finish(self._html)


class ShimHandler(GuardMixin):
    def initialize(self, script: str) -> None:
        self._script = script

    def get(self) -> None:
        self.set_header("Content-Type", "application/javascript; charset=UTF-8")
        self.finish(self._script)


def routes() -> tuple[str, list[tuple[str, type[tornado.web.RequestHandler], dict]]]:
    """(CSP, handlers) for the visualiser's entry page and its shim."""
    html = read_index()
    return content_security_policy(html), [
        (r"/static/visualiser/index\.html", IndexHandler, {"html": patched_index(html)}),
        (r"/appliance/visualiser-post\.js", ShimHandler, {"script": shim_script()}),
    ]
