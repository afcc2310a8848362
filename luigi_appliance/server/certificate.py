"""The server's TLS certificate, and the CAs of client certificates ([client_certificates]
ca_file): chosen at start, re-read on SIGHUP when they pass the checks."""

from __future__ import annotations

import ipaddress
import logging
import ssl

from luigi_appliance import tls
from luigi_appliance.config import Settings
from luigi_appliance.errors import ApplianceError
from luigi_appliance.server.lifecycle import Component

log = logging.getLogger(__name__)


def ipaddress_is_unspecified(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_unspecified
    except ValueError:
        return False


class ServerCertificate(Component):
    """The live TLS context and the certificate pair it serves."""

    name = "tls"

    def __init__(self, settings: Settings, context: ssl.SSLContext, pair: tls.CertPair):
        self._settings = settings
        self.context = context
        self.pair = pair

    @classmethod
    def for_settings(cls, settings: Settings) -> ServerCertificate | None:
        """The certificate to serve, or None for plain HTTP ([server] insecure_http)."""
        if settings.server.insecure_http:
            log.warning("INSECURE: serving plain HTTP on %s ([server] insecure_http = true); credentials "
                        "cross this socket in clear", settings.server.listen)
            return None
        host = settings.server.listen.host
        # A wildcard address is no name a client connects to; the certificate gets the FQDN instead.
        hosts = [host] if host and not ipaddress_is_unspecified(host) else []
        pair = tls.resolve_pair(settings.tls, settings.state.dir, hosts)
        context = tls.server_context(settings.tls, pair, settings.state.dir)
        log.info("TLS certificate %s, SHA-256 fingerprint %s", pair.cert_file, tls.fingerprint(pair.cert_file))
        client_ca = settings.client_certificates.ca_file
        if client_ca is not None:
            problem = tls.request_client_certificates(context, client_ca)
            if problem is not None:  # config check refuses it first (server/startup_checks.py)
                raise ApplianceError(f"[client_certificates] ca_file: {problem}")
            log.info("Asking clients for a certificate issued by a CA of %s (optional)", client_ca)
        return cls(settings, context, pair)

    def reload(self) -> None:
        pair = self.pair
        try:
            # The checks config check applies and a trial load first; the live context only
            # gets a pair that passed them.
            problem = tls.reload_pair(self.context, self._settings.tls, pair, self._settings.state.dir)
        except (OSError, ssl.SSLError, ValueError) as exc:
            problem = f"cannot load {pair.cert_file}: {exc}"
        if problem is None:
            log.info("Reloaded TLS certificate %s (SHA-256 %s)", pair.cert_file, tls.fingerprint(pair.cert_file))
        else:
            log.error("Keeping the previous TLS certificate: %s", problem)
        client_ca = self._settings.client_certificates.ca_file
        if client_ca is not None:
            try:
                problem = tls.request_client_certificates(self.context, client_ca)
            except (OSError, ssl.SSLError) as exc:
                problem = f"cannot load {client_ca}: {exc}"
            if problem is None:
                log.info("Reloaded the client CAs of %s", client_ca)
            else:
                log.error("Keeping the previous client CAs: %s", problem)
