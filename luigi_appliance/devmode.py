"""``serve --dev``: everything a first run needs, generated into one directory."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from pathlib import Path

from luigi_appliance.auth import Role
from luigi_appliance.auth.local import UsersFile
from luigi_appliance.secret_values import write_private_file

ADMIN = "admin"


@dataclass(frozen=True)
class DevFiles:
    users_file: Path
    password_file: Path
    credentials_file: Path


def bootstrap(state_dir: Path) -> DevFiles:
    """Create DIR (0700) with an ``admin`` account on first use; later runs reuse it."""
    state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    state_dir.chmod(0o700)
    files = DevFiles(state_dir / "users", state_dir / "admin-password", state_dir / "admin-credentials")
    if not files.users_file.exists():
        password = secrets.token_urlsafe(18)
        UsersFile(files.users_file).add(ADMIN, Role.ADMIN, password)
        write_private_file(files.password_file, f"{password}\n".encode())
        # The same secret in the username:password form that `luigi-appliance run` reads.
        write_private_file(files.credentials_file, f"{ADMIN}:{password}\n".encode())
    return files
