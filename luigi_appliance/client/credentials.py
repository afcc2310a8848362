"""Worker credentials, read at run time from a file holding ``username:password``.

Looked up in order: ``--credentials-file``, ``$LUIGI_APPLIANCE_CREDENTIALS`` (a path), the
client.conf ``credentials_file``, then ``$CREDENTIALS_DIRECTORY/luigi-appliance`` as systemd's
``LoadCredential=`` provides it. The file must not be readable by others.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

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
