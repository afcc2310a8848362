"""``luigi-appliance oidc test --issuer NAME`` and ``luigi-appliance oidc explain TOKENFILE``.

``test`` fetches an issuer's discovery document and JWKS as the scheduler would (its CA file,
verify-full) and prints what it found; ``explain`` verifies a token first (signature, iss, aud,
times), then shows which rules matched and why, and the role and task families that result.
The token is read from a file or stdin, never from the command line (where ``ps`` shows it);
neither command prints a token.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from pathlib import Path
from typing import Any

from luigi_appliance.errors import ApplianceError

EXIT_REFUSED = 1


def add_parsers(sub: Any) -> None:
    """The ``oidc`` command and its subcommands."""
    oidc = sub.add_parser("oidc", help="check OpenID Connect issuers and explain tokens")
    oidc_sub = oidc.add_subparsers(dest="oidc_command", required=True)
    test = oidc_sub.add_parser("test", help="fetch an issuer's discovery document and keys")
    test.add_argument("--issuer", required=True, metavar="NAME", help="the NAME of [oidc.NAME]")
    explain = oidc_sub.add_parser("explain", help="verify a token, then show which rules give which role")
    explain.add_argument("token_file", metavar="TOKENFILE", help="a file holding the token, or - for stdin")
    oidc.set_defaults(func=cmd_oidc)


def _issuers(args: argparse.Namespace):
    from luigi_appliance.auth.oidc.issuers import issuers_for
    from luigi_appliance.config_loader import config_paths, load_settings

    issuers = issuers_for(load_settings(config_paths(args.config)))
    if issuers is None:
        raise ApplianceError("no [oidc.NAME] section is configured in scheduler.conf (see docs/oidc.md)")
    return issuers


def _read_token(name: str) -> str:
    try:
        text = sys.stdin.read() if name == "-" else Path(name).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ApplianceError(f"cannot read the token from {name}: {getattr(exc, 'strerror', None) or exc}") from None
    token = text.strip()
    if not token:
        raise ApplianceError(f"{'stdin' if name == '-' else name} holds no token")
    return token


async def _test(issuers: Any, name: str) -> list[str]:
    issuer = issuers.issuer(name)
    found = await issuer.discovery()
    keys = await issuer.keys.keys()
    lines = [f"issuer {name}: {found.issuer}",
             f"  discovery: {issuer.discovery_url}",
             f"  jwks_uri: {found.jwks_uri}",
             f"  authorization_endpoint: {found.authorization_endpoint or '(none: no browser login)'}",
             f"  token_endpoint: {found.token_endpoint or '(none)'}",
             f"  end_session_endpoint: {found.end_session_endpoint or '(none)'}",
             f"  signing algorithms published: {', '.join(found.signing_algorithms) or '(not said)'}",
             f"  accepted here: {', '.join(issuer.settings.algorithms)}",
             f"  keys: {len(keys)}"]
    for key in keys:
        usable = [a for a in issuer.settings.algorithms if key.fits(a)]
        lines.append(f"    kid {key.kid or '(none)'}: {key.kty} {key.alg or '(no alg)'}; verifies "
                     f"{', '.join(usable) or 'nothing accepted here'}")
    return lines


def _explain_lines(explanation: Any) -> list[str]:
    grant = explanation.grant
    claims = explanation.claims
    lines = [f"verified: a token of issuer {explanation.issuer} ({claims.get('iss')}), "
             f"aud {claims.get('aud')}, sub {claims.get('sub')}",
             f"user name: {explanation.identity.name}",
             f"groups: {len(explanation.identity.groups)}"
             + (f" ({', '.join(sorted(explanation.identity.groups)[:20])}"
                f"{', ...' if len(explanation.identity.groups) > 20 else ''})" if explanation.identity.groups else "")]
    if grant.matched:
        lines.append("rules that matched:")
        lines += [f"  [oidc.{explanation.issuer}] {rule}    ({why})" for rule, why in grant.matched]
    else:
        lines.append("rules that matched: none")
    if grant.role is None:
        lines.append("role: none: the scheduler refuses this identity (no_role)")
        return lines
    lines.append(f"role: {grant.role}")
    lines.append("task families: unrestricted" if grant.families is None else
                 f"task families: {' '.join(grant.families) or 'none'}")
    return lines


def cmd_oidc(args: argparse.Namespace) -> int:
    from luigi_appliance.auth.oidc import TokenRefused

    if args.oidc_command == "explain":
        token = _read_token(args.token_file)  # before the configuration: a bad path is the user's first error
    issuers = _issuers(args)
    # tornado logs a TLS failure itself before the fetch raises it; the error line below says it.
    logging.getLogger("tornado.general").setLevel(logging.CRITICAL)
    try:
        if args.oidc_command == "test":
            if args.issuer not in issuers.names():
                raise ApplianceError(f"no [oidc.{args.issuer}] section; configured: {', '.join(issuers.names())}")
            lines = asyncio.run(_test(issuers, args.issuer))
        else:
            lines = _explain_lines(asyncio.run(issuers.explain(token)))
    except TokenRefused as exc:
        raise ApplianceError(f"refused ({exc.reason}): {exc}") from None
    print("\n".join(lines))
    return 0 if args.oidc_command == "test" or "role: none" not in lines[-1] else EXIT_REFUSED
