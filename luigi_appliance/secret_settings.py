"""The [secrets] section, and how the loader reads secrets (secret_values.py does the work)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from luigi_appliance.errors import SecretError
from luigi_appliance.secret_values import ENC_PREFIX, decrypt_value, secret_file_problem
from luigi_appliance.settings.declare import key
from luigi_appliance.settings.loader import section
from luigi_appliance.settings.parsers import parse_path


@dataclass(frozen=True)
class SecretsSettings:
    key_file: Path = key(parse_path, Path("/etc/luigi-appliance/secret.key"),
                         "Fernet key decrypting enc: values (read before every other section)")


SECRETS = section("secrets", SecretsSettings)


class SecretFiles:
    """The SecretValues of scheduler.conf: Fernet ``enc:`` values and the secret-file rules."""

    prefix = ENC_PREFIX
    encrypt_hint = "an enc: value from 'luigi-appliance secret encrypt'"

    def decrypt(self, value: str, key_file: Path) -> bytes:
        try:
            return decrypt_value(value, key_file).encode()
        except SecretError as exc:
            raise ValueError(str(exc)) from None

    def file_problem(self, path: Path) -> str | None:
        return secret_file_problem(path)
