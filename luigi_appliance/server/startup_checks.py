"""What ``serve`` would refuse at start, found before it starts anything.

The configuration loader (config_loader.py) runs these checks whenever it checks files, so
``config check`` and ``serve`` refuse the same things with the same messages, each at the line
of the key that names the file (or the key's section, for a default). Nothing here creates or
changes a file: a key, a certificate, the state directory are only made by ``serve`` itself,
after every check passed. The checks read what serve reads: the state directory and the files
it keeps there, the certificate and key together, the users file, secret files' contents, the
token keys, the audit log's place, its signing key and chain head, and the modules that
configured features import.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
from collections.abc import Callable
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from luigi.metrics import MetricsCollector, MetricsCollectors

from luigi_appliance import tls
from luigi_appliance.audit.signing import signing_key_problem
from luigi_appliance.audit.trail import HEAD_FILE, find_head
from luigi_appliance.auth.local import UsersFile
from luigi_appliance.auth.tokens import keys_file as token_keys_file
from luigi_appliance.auth.tokens import read_keys
from luigi_appliance.config import Settings
from luigi_appliance.errors import ApplianceError
from luigi_appliance.secret_values import read_secret_file
from luigi_appliance.server.state_dir import state_dir_problems
from luigi_appliance.settings.inifile import IniDocument
from luigi_appliance.settings.issues import ConfigIssue
from luigi_appliance.state import check_key

# Reports a problem at a key: (section, key, message).
Report = Callable[[str, str, str], None]

# The client library, then luigi's collector module: luigi's datadog module only warns when
# datadog is missing ("Will crash at runtime"), so the library is checked first, itself.
_COLLECTOR_MODULES = {MetricsCollectors.datadog: ("datadog", "luigi.contrib.datadog_metric"),
                      MetricsCollectors.prometheus: ("prometheus_client", "luigi.contrib.prometheus_metric")}


def startup_issues(settings: Settings, doc: IniDocument) -> list[ConfigIssue]:
    """Every problem ``serve`` would stop at while starting with ``settings`` (read from ``doc``)."""
    issues: list[ConfigIssue] = []

    def report(section: str, key: str, message: str) -> None:
        entry = doc.get(section, key)
        if entry is not None:
            issues.append(ConfigIssue(entry.file, entry.line, section, key, message))
        else:  # a default: no line names it
            issues.append(ConfigIssue(doc.files[0] if doc.files else "<defaults>", None, section, key, message))

    for check in (_state, _listen, _certificate, _client_ca, _accounts, _tokens, _audit, _history, _luigi_modules,
                  _oidc):
        check(settings, report)
    return issues


def _writable_place(path: Path) -> str | None:
    """Why this account could not create or append to the file ``path``, or None."""
    if path.exists():
        if not path.is_file():
            return f"{path} is not a regular file"
        if not os.access(path, os.W_OK, effective_ids=True):
            return f"{path} is not writable by this account (uid {os.geteuid()})"
        return None
    if not path.parent.is_dir():
        return f"directory {path.parent} does not exist"
    if not os.access(path.parent, os.W_OK | os.X_OK, effective_ids=True):
        return f"directory {path.parent} is not writable by this account (uid {os.geteuid()})"
    return None


def _secret_text_problem(path: Path | None) -> str | None:
    """Why the secret file ``path`` (a password) cannot be used, or None."""
    if path is None:
        return None
    try:
        read_secret_file(path).decode("utf-8")
    except ApplianceError as exc:
        return str(exc)
    except UnicodeDecodeError:
        return f"secret file {path} is not UTF-8 text"
    return None


def _import_problem(module: str) -> str | None:
    """Why ``module`` cannot be imported, or None."""
    try:
        importlib.import_module(module)
    except ModuleNotFoundError as exc:
        return f"the Python module {exc.name} is not installed"
    except Exception as exc:  # the module's own code failed: serve would fail alike
        return f"importing {module} failed: {type(exc).__name__}: {exc}"
    return None


def _state(settings: Settings, report: Report) -> None:
    for problem in state_dir_problems(settings):
        report("state", "dir", problem)
    state = settings.state
    try:
        if state.hmac_key is not None:
            check_key(state.hmac_key, "[state] hmac_key")
        elif state.hmac_key_file is not None:
            check_key(read_secret_file(state.hmac_key_file).strip(), str(state.hmac_key_file))
    except ApplianceError as exc:
        report("state", "hmac_key" if state.hmac_key is not None else "hmac_key_file", str(exc))


def _listen(settings: Settings, report: Report) -> None:
    socket_path = settings.server.listen.unix_path
    if socket_path is None:
        return
    directory = socket_path.parent
    if not directory.is_dir():
        report("server", "listen", f"the socket's directory {directory} does not exist")
    elif not os.access(directory, os.W_OK | os.X_OK, effective_ids=True):
        report("server", "listen", f"the socket's directory {directory} is not writable by this account "
               f"(uid {os.geteuid()})")


def _certificate(settings: Settings, report: Report) -> None:
    if settings.server.insecure_http:
        return
    if settings.tls.cert_file is not None and settings.tls.key_file is not None:
        problem = tls.pair_problem(settings.tls, tls.CertPair(settings.tls.cert_file, settings.tls.key_file))
        if problem is not None:
            report("tls", problem.key, problem.message)
        return
    # No pair configured: the self-signed one in the state directory, generated on first start.
    pair = tls.CertPair(settings.state.dir / tls.SELF_SIGNED_CERT, settings.state.dir / tls.SELF_SIGNED_KEY)
    if pair.cert_file.is_file() and pair.key_file.is_file():
        problem = tls.pair_problem(settings.tls, pair)
        if problem is not None and problem.key == "ca_file":
            report("tls", "ca_file", problem.message)
        elif problem is not None:
            report("state", "dir", f"the self-signed certificate kept there cannot be served: {problem.message}; "
                   f"remove {pair.cert_file} and {pair.key_file} to have a new pair generated")
    elif settings.tls.ca_file is not None:
        problem_text = tls.chain_problem(settings.tls.ca_file)
        if problem_text is not None:
            report("tls", "ca_file", problem_text)


def _client_ca(settings: Settings, report: Report) -> None:
    ca_file = settings.client_certificates.ca_file
    if ca_file is None:
        return
    if settings.server.insecure_http:
        report("client_certificates", "ca_file", "plain HTTP ([server] insecure_http) carries no client "
               "certificate; serve HTTPS or remove ca_file")
        return
    problem = tls.client_ca_problem(ca_file)
    if problem is not None:
        report("client_certificates", "ca_file", problem)


def _accounts(settings: Settings, report: Report) -> None:
    backends = settings.auth.backends
    if "local" in backends:
        try:
            UsersFile(settings.auth.users_file).read()
        except ApplianceError as exc:
            for problem in str(exc).splitlines():
                report("auth", "users_file", problem)
    if "ldap" in backends:
        ldap = settings.ldap
        password_problem = _secret_text_problem(ldap.bind_password_file)
        if password_problem is not None:
            report("ldap", "bind_password_file", password_problem)
        ca_problem = tls.chain_problem(ldap.ca_file) if ldap.ca_file is not None else None
        if ca_problem is not None:
            report("ldap", "ca_file", ca_problem)


def _tokens(settings: Settings, report: Report) -> None:
    path = token_keys_file(settings)
    where = ("tokens", "keys_file") if settings.tokens.keys_file is not None else ("state", "dir")
    if path.exists():
        try:
            read_keys(path)
        except ApplianceError as exc:
            report(*where, str(exc))
    elif settings.tokens.keys_file is not None:
        # serve creates it on first start.
        problem = _writable_place(path)
        if problem is not None:
            report(*where, f"cannot create the token keys file: {problem}")


def _audit(settings: Settings, report: Report) -> None:
    problem = _writable_place(settings.audit.file)
    if problem is not None:
        report("audit", "file", f"cannot open the audit log {settings.audit.file}: {problem}")
    key_problem = signing_key_problem(settings)
    if key_problem is not None:
        report("audit" if settings.audit.signing_key_file is not None else "state",
               "signing_key_file" if settings.audit.signing_key_file is not None else "dir", key_problem)
    if problem is None:  # where the chain continues: serve stops at a head file that is no head
        try:
            find_head(settings.audit.file, settings.state.dir / HEAD_FILE)
        except ApplianceError as exc:
            report("audit", "file", str(exc))


def _history(settings: Settings, report: Report) -> None:
    history = settings.history
    if not history.enabled:
        return
    needed = ["sqlalchemy", *(["psycopg2"] if history.backend == "postgresql" else [])]
    for module in needed:
        if importlib.util.find_spec(module) is None:
            report("history", "backend", f"backend = {history.backend} needs the Python module {module}, "
                   "which is not installed")
    if history.backend != "postgresql":
        return
    password_problem = _secret_text_problem(history.password_file)
    if password_problem is not None:
        report("history", "password_file", password_problem)
    ca_problem = tls.chain_problem(history.sslrootcert) if history.sslrootcert is not None else None
    if ca_problem is not None:
        report("history", "sslrootcert", ca_problem)


def _luigi_modules(settings: Settings, report: Report) -> None:
    """luigi's metrics collectors import their client library when the scheduler is made."""
    collector = settings.scheduler.get("metrics_collector", MetricsCollectors.default)
    if collector in _COLLECTOR_MODULES:
        problem = next(filter(None, map(_import_problem, _COLLECTOR_MODULES[collector])), None)
        if problem is not None:
            report("scheduler", "metrics_collector", f"metrics_collector = {collector.name} cannot be used: {problem}")
    elif collector == MetricsCollectors.custom:
        target = settings.scheduler.get("metrics_custom_import")
        if not target or "." not in target:
            report("scheduler", "metrics_collector", "metrics_collector = custom needs metrics_custom_import = "
                   "package.module.ClassName, a subclass of luigi.metrics.MetricsCollector")
            return
        module, _, class_name = target.rpartition(".")
        problem = _import_problem(module)
        if problem is not None:
            report("scheduler", "metrics_custom_import", f"cannot import {module}: {problem}")
            return
        cls = getattr(importlib.import_module(module), class_name, None)
        if not (isinstance(cls, type) and issubclass(cls, MetricsCollector)):
            report("scheduler", "metrics_custom_import",
                   f"{target} is not a subclass of luigi.metrics.MetricsCollector")


def _oidc(settings: Settings, report: Report) -> None:
    """Each issuer's CA file, client secret file and private key, read as serve would (no network)."""
    for name, issuer in settings.oidc.items():
        section = f"oidc.{name}"
        if issuer.ca_file is not None:
            problem = tls.chain_problem(issuer.ca_file)
            if problem is not None:
                report(section, "ca_file", problem)
        problem = _secret_text_problem(issuer.client_secret_file)
        if problem is not None:
            report(section, "client_secret_file", problem)
        if issuer.private_key_file is not None:
            problem = _private_key_problem(issuer.private_key_file)
            if problem is not None:
                report(section, "private_key_file", problem)


def _private_key_problem(path: Path) -> str | None:
    """Why ``path`` holds no usable PEM private key for a client assertion, or None."""
    try:
        key = serialization.load_pem_private_key(read_secret_file(path), None)
    except ApplianceError as exc:
        return str(exc)
    except (ValueError, TypeError):
        return f"{path} holds no unencrypted PEM private key"
    if not isinstance(key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey):
        return f"{path} holds a {type(key).__name__}; expected an RSA, EC or Ed25519 key"
    return None
