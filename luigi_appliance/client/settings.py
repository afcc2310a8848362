"""client.conf: where the scheduler is and how to trust it, for ``luigi-appliance run``."""

from __future__ import annotations

import os
import re
import shlex
import ssl
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from luigi_appliance.client.task_batches import DEFAULT_BATCH_TASKS
from luigi_appliance.errors import ConfigError
from luigi_appliance.hosts import is_loopback_host
from luigi_appliance.settings.declare import key
from luigi_appliance.settings.inifile import Entry, read_files
from luigi_appliance.settings.issues import ConfigIssue
from luigi_appliance.settings.loader import SchemaLoader, section
from luigi_appliance.settings.parsers import choice, duration_range, int_range, parse_path

DEFAULT_CLIENT_CONFIG = Path("/etc/luigi-appliance/client.conf")
CLIENT_CONFIG_ENV = "LUIGI_APPLIANCE_CLIENT_CONFIG"


def parse_scheduler_url(value: str) -> str:
    """https://HOST:PORT/ (http:// only to a loopback address); never credentials in the URL."""
    parts = urlsplit(value)
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise ValueError(f"expected https://HOST:PORT/, got {value!r}")
    if parts.username is not None or parts.password is not None:
        raise ValueError("credentials do not belong in the URL (they end up in logs); use a credentials file")
    if parts.scheme == "http" and not is_loopback_host(parts.hostname):
        raise ValueError(f"plain http:// is only allowed to a loopback address, not {parts.hostname}")
    return value if value.endswith("/") else value + "/"


_URL_SEPARATORS = re.compile(r"[\s,]+")


def parse_scheduler_urls(value: str) -> tuple[str, ...]:
    """One scheduler URL, or several (the nodes of an HA pair), separated by commas or spaces;
    each as ``parse_scheduler_url`` wants it. The first is tried first."""
    written = [part for part in _URL_SEPARATORS.split(value.strip()) if part]
    if not written:
        raise ValueError("expected https://HOST:PORT/ (several, for an HA pair, separated by commas or spaces)")
    if len(written) == 1:
        return (parse_scheduler_url(written[0]),)
    urls: list[str] = []
    for number, part in enumerate(written, 1):
        try:
            url = parse_scheduler_url(part)
        except ValueError as exc:
            # By its place, not its text: a URL with credentials in it must not be repeated.
            raise ValueError(f"URL {number} of {len(written)}: {exc}") from None
        if url in urls:
            raise ValueError(f"{url} is given twice")
        urls.append(url)
    return tuple(urls)


def parse_ca_file(value: str) -> Path:
    """A readable PEM file of CA certificates (checked here: requests would only say so on the
    first request, as an SSL error that looks like the scheduler's)."""
    path = parse_path(value)
    try:
        ssl.create_default_context(cafile=str(path))
    except ssl.SSLError:
        raise ValueError(f"{path} holds no PEM certificate; expected the CA certificate(s) that signed "
                         "the scheduler's certificate") from None
    except OSError as exc:
        raise ValueError(f"cannot read {path}: {exc.strerror or exc}") from None
    return path


def parse_command(value: str) -> tuple[str, ...]:
    """A program and its arguments, split as a POSIX shell would (quotes) but never run by one."""
    try:
        argv = tuple(shlex.split(value))
    except ValueError as exc:
        raise ValueError(f"cannot split the command {value!r}: {exc}") from None
    if not argv:
        raise ValueError("expected a command, e.g. /usr/local/bin/get-oidc-token --audience luigi")
    return argv


@dataclass(frozen=True)
class ClientSettings:
    # Several for an HA pair (client/leader.py follows the leader among them).
    scheduler_urls: tuple[str, ...] = key(parse_scheduler_urls, ("https://localhost:8082/",), "the scheduler's URL",
                                          name="scheduler_url")
    ca_file: Path | None = key(parse_ca_file, None, "PEM CA certificate(s) verifying the scheduler's certificate")
    credentials_file: Path | None = key(parse_path, None, "file holding the worker's username:password")
    connect_timeout: float = key(duration_range(1, 600), 10.0, "timeout of each request to the scheduler")
    retry_attempts: int = key(int_range(1, 100), 3, "attempts per scheduler call before giving up")
    retry_wait: float = key(duration_range(0, 3600), 30.0, "pause between attempts")
    auth: str = key(choice("token", "basic", "oidc-exchange"), "token",
                    "how each call authenticates: token, basic or oidc-exchange")
    subject_token_file: Path | None = key(parse_path, None, "auth = oidc-exchange: file holding the JWT to "
                                          "exchange, read at each exchange")
    subject_token_command: tuple[str, ...] | None = key(
        parse_command, None, "auth = oidc-exchange: command printing the JWT, run at each exchange (no shell)")
    add_task_batch: int = key(int_range(1, 1000), DEFAULT_BATCH_TASKS,
                              "add_task calls sent together as one add_tasks call; 1 sends each alone")

    @property
    def scheduler_url(self) -> str:
        """The first scheduler URL: the only one, without HA."""
        return self.scheduler_urls[0]


_SUBJECT_KEYS = ("subject_token_file", "subject_token_command")


def _check_client(loader: SchemaLoader) -> None:
    """auth = oidc-exchange reads its JWT from exactly one place; the other modes from none."""
    v, doc = loader.values, loader.doc
    # Given, valid or not (an invalid value has its own issue already).
    given = [name for name in _SUBJECT_KEYS if doc.get("client", name) is not None]
    if v.get(("client", "auth")) == "oidc-exchange":
        if len(given) != 1:
            loader.issue(doc.get("client", "auth"), "client", "auth",
                         "auth = oidc-exchange needs exactly one of subject_token_file = PATH or "
                         "subject_token_command = COMMAND (where the JWT to exchange comes from)")
    elif given:
        loader.issue(doc.get("client", given[0]), "client", given[0],
                     f"{given[0]} is used with auth = oidc-exchange only; set auth = oidc-exchange or remove it")


CLIENT = section("client", ClientSettings, _check_client)


def _present(path: Path) -> bool:
    """True if ``path`` exists or cannot be checked (then reading it reports why)."""
    try:
        path.stat()
    except FileNotFoundError:
        return False
    except OSError:
        return True
    return True


_COMMAND_LINE = "<command line>"
_PATH_KEYS = ("ca_file", "credentials_file", "subject_token_file")


def _as_option(issue: ConfigIssue) -> ConfigIssue:
    """An issue of a command-line override, named as the option the user typed."""
    if issue.file != _COMMAND_LINE or issue.key is None:
        return issue
    return ConfigIssue(f"--{issue.key.replace('_', '-')}", None, None, None, issue.message)


def load_client_settings(explicit: Path | None, overrides: dict[str, str]) -> ClientSettings:
    """Read client.conf (optional unless named explicitly) and apply command-line overrides
    (paths among them relative to the working directory)."""
    path = explicit or Path(os.environ.get(CLIENT_CONFIG_ENV) or DEFAULT_CLIENT_CONFIG)
    issues: list[ConfigIssue] = []
    paths = [path] if (explicit or _present(path)) else []
    doc = read_files(paths, issues)
    for name, value in overrides.items():
        if name in _PATH_KEYS and value:
            value = os.path.abspath(value)
        doc.entries[("client", name)] = Entry("client", name, value, _COMMAND_LINE, 0)
    loader = SchemaLoader(doc, issues, check_files=True, sections=[CLIENT])
    loader.load()
    loader.check()
    if issues:
        raise ConfigError([_as_option(issue) for issue in issues])
    return CLIENT.build(loader)
