"""Worker credentials, read at run time: a file holding ``username:password``, or, with
client.conf's ``auth = oidc-exchange``, the JWT of an OpenID issuer (``SubjectToken``).

The credentials file is looked up in order: ``--credentials-file``,
``$LUIGI_APPLIANCE_CREDENTIALS`` (a path), the client.conf ``credentials_file``, then
``$CREDENTIALS_DIRECTORY/luigi-appliance`` as systemd's ``LoadCredential=`` provides it. The
file must not be readable by others.

A subject token comes from client.conf only (``subject_token_file`` or ``subject_token_command``),
never from the command line, where every user of the machine could read it; it is read again for
each exchange, so a token the platform rotates (a Kubernetes projected service-account token) is
picked up. It is never logged: errors name the file or the program, not what they held.
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from luigi_appliance.client.settings import ClientSettings
from luigi_appliance.errors import CredentialsError, SecretError
from luigi_appliance.secret_values import read_secret_file

CREDENTIALS_ENV = "LUIGI_APPLIANCE_CREDENTIALS"
SYSTEMD_CREDENTIAL = "luigi-appliance"


@dataclass(frozen=True)
class Credentials:
    username: str
    password: str = field(repr=False)
    source: str = ""


def credentials_path(explicit: Path | None, configured: Path | None) -> tuple[Path, str]:
    """The credentials file to read, and which step of the lookup named it."""
    if explicit is not None:
        return explicit, "--credentials-file"
    if os.environ.get(CREDENTIALS_ENV):
        return Path(os.environ[CREDENTIALS_ENV]), f"${CREDENTIALS_ENV}"
    if configured is not None:
        return configured, "credentials_file in client.conf"
    if os.environ.get("CREDENTIALS_DIRECTORY"):
        return Path(os.environ["CREDENTIALS_DIRECTORY"]) / SYSTEMD_CREDENTIAL, "$CREDENTIALS_DIRECTORY"
    raise CredentialsError(
        f"no worker credentials: give --credentials-file, set {CREDENTIALS_ENV} to a file, set "
        "credentials_file in client.conf, or run under systemd with LoadCredential=luigi-appliance:PATH")


def load_credentials(explicit: Path | None = None, configured: Path | None = None) -> Credentials:
    """The credentials from the first file the lookup finds; CredentialsError naming the file,
    where its name came from and what to do, if it is missing, unreadable or too open."""
    path, named_by = credentials_path(explicit, configured)
    try:
        raw = read_secret_file(path)
    except SecretError as exc:
        create = "; create it with one line username:password, mode 0600" if not path.exists() else ""
        raise CredentialsError(f"credentials ({named_by}): {exc}{create}") from None
    try:
        text = raw.decode("utf-8").strip("\r\n")
    except UnicodeDecodeError:
        raise CredentialsError(f"credentials file {path} is not UTF-8 text") from None
    username, sep, password = text.partition(":")
    if not sep or not username or not password or "\n" in text:
        raise CredentialsError(f"credentials file {path}: expected one line 'username:password'")
    return Credentials(username, password, str(path))


# A JWT is a few KB; a program printing more is not printing a token.
MAX_SUBJECT_TOKEN = 64 * 1024


@dataclass(frozen=True)
class SubjectToken:
    """Where ``auth = oidc-exchange`` reads the JWT it exchanges for a bearer token: a file, or a
    program's standard output (run without a shell, at most ``timeout`` seconds)."""

    file: Path | None = None
    command: tuple[str, ...] | None = None
    timeout: float = 30.0

    @property
    def source(self) -> str:
        """Where the token comes from, for messages (the program, not its arguments)."""
        if self.file is not None:
            return f"subject_token_file {self.file}"
        assert self.command is not None
        return f"subject_token_command {self.command[0]}"

    def read(self) -> str:
        """The token as it is now; CredentialsError naming the file or program and what to do."""
        raw = self._read_file() if self.file is not None else self._run()
        try:
            token = raw.decode("ascii").strip()
        except UnicodeDecodeError:
            raise CredentialsError(f"{self.source}: not a JWT (expected ASCII text)") from None
        if not token or len(token) > MAX_SUBJECT_TOKEN or token.count(".") != 2 or any(c.isspace() for c in token):
            raise CredentialsError(f"{self.source}: not a JWT (expected one line header.payload.signature)")
        return token

    def _read_file(self) -> bytes:
        assert self.file is not None
        try:
            with open(self.file, "rb") as fh:
                return fh.read(MAX_SUBJECT_TOKEN + 1)
        except OSError as exc:
            raise CredentialsError(f"cannot read {self.source}: {exc.strerror or exc}; check subject_token_file "
                                   "in client.conf") from None

    def _run(self) -> bytes:
        assert self.command is not None
        try:
            done = subprocess.run(list(self.command), stdin=subprocess.DEVNULL, capture_output=True,
                                  timeout=self.timeout, check=False)
        except subprocess.TimeoutExpired:
            raise CredentialsError(f"{self.source} printed no token within {self.timeout:.0f}s") from None
        except OSError as exc:
            raise CredentialsError(f"cannot run {self.source}: {exc.strerror or exc}; check "
                                   "subject_token_command in client.conf") from None
        if done.returncode != 0:
            # Its standard error, clipped, but never its output: that may be a token.
            why = done.stderr.decode("utf-8", "replace").strip().splitlines()
            said = f": {why[0][:200]}" if why else ""
            raise CredentialsError(f"{self.source} exited with {done.returncode}{said}")
        return done.stdout


# What authenticates a client: a name and password, or a subject token to exchange.
Identity = Credentials | SubjectToken


def load_identity(settings: ClientSettings, explicit: Path | None = None) -> Identity:
    """What authenticates this client as client.conf's ``auth`` says: the credentials file
    (``explicit``: ``--credentials-file``), or with ``auth = oidc-exchange`` the subject token,
    read once here so that a missing file or a failing program stops the run before it starts."""
    if settings.auth != "oidc-exchange":
        return load_credentials(explicit, settings.credentials_file)
    if explicit is not None:
        raise CredentialsError("--credentials-file goes with auth = token or basic; client.conf has "
                               "auth = oidc-exchange (the subject token is the credential)")
    subject = SubjectToken(settings.subject_token_file, settings.subject_token_command, settings.connect_timeout)
    subject.read()
    return subject
