"""``config check`` refuses everything ``serve`` refuses, with the same message at the same line.

Each case breaks one thing serve needs at start (a file's mode or contents, the state
directory, the certificate pair, a module a luigi option imports, ...) in an otherwise servable
configuration, then runs ``luigi-appliance config check`` and ``luigi-appliance serve`` as a
user would. Both must exit 1 with the same configuration-error listing naming the file and the
line of the key that names the broken file, without a traceback; neither may have created
anything (no state key, certificate, token keys or audit log).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from conftest import cli, free_port, write_config
from luigi_appliance.auth.passwords import hash_password
from luigi_appliance.tls import ensure_self_signed

_HASH = hash_password("admin-password-123")


@dataclass
class Setup:
    """A servable configuration in ``root``: sections of keys, written by ``write``."""

    root: Path
    sections: dict[str, dict[str, str]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        state = self.root / "state"
        state.mkdir(mode=0o750)
        users = self.private("users", f"admin:admin:{_HASH}\n")
        self.sections = {
            "server": {"listen": f"127.0.0.1:{free_port()}"},
            "state": {"dir": str(state)},
            "auth": {"users_file": str(users)},
            "secrets": {"key_file": str(self.root / "secret.key")},
            "audit": {"file": str(self.root / "audit.log")},
        }

    def private(self, name: str, content: str | bytes, mode: int = 0o600) -> Path:
        path = self.root / name
        path.write_bytes(content.encode() if isinstance(content, str) else content)
        path.chmod(mode)
        return path

    def pair(self, name: str) -> tuple[Path, Path]:
        """A certificate and its key, in a directory of their own."""
        (self.root / name).mkdir(mode=0o750, exist_ok=True)
        pair = ensure_self_signed(self.root / name, ["127.0.0.1"])
        return pair.cert_file, pair.key_file

    def write(self) -> tuple[Path, dict[tuple[str, str], int]]:
        """The configuration file and the line of each key in it."""
        lines: list[str] = []
        where: dict[tuple[str, str], int] = {}
        for section, keys in self.sections.items():
            lines.append(f"[{section}]")
            for key, value in keys.items():
                lines.append(f"{key} = {value}")
                where[(section, key)] = len(lines)
        return write_config(self.root / "scheduler.conf", "\n".join(lines) + "\n"), where


def _tree(root: Path) -> set[tuple[str, int]]:
    return {(str(p), p.lstat().st_mtime_ns) for p in root.rglob("*")}


# Each case breaks a servable Setup and returns the key whose line the refusal names and a part
# of its message.
Case = Callable[[Setup], tuple[str, str, str]]


def state_dir_open_to_others(s: Setup) -> tuple[str, str, str]:
    Path(s.sections["state"]["dir"]).chmod(0o755)
    return "state", "dir", "has mode 0755: others may access it"


def state_dir_is_a_link(s: Setup) -> tuple[str, str, str]:
    link = s.root / "state-link"
    link.symlink_to(s.sections["state"]["dir"])
    s.sections["state"]["dir"] = str(link)
    return "state", "dir", "is a symbolic link"


def state_dir_is_a_file(s: Setup) -> tuple[str, str, str]:
    s.sections["state"]["dir"] = str(s.private("not-a-dir", "x"))
    return "state", "dir", "is not a directory"


def state_key_too_short(s: Setup) -> tuple[str, str, str]:
    s.private("state/state.key", "0123456789\n")
    return "state", "dir", "state.key is 10 bytes; at least 32 are required"


def generation_file_garbage(s: Setup) -> tuple[str, str, str]:
    s.private("state/state.generation", "not a number\n")
    return "state", "dir", "does not hold a generation number"


def link_in_state_dir(s: Setup) -> tuple[str, str, str]:
    (s.root / "state" / "token.keys").symlink_to(s.root / "elsewhere")
    return "state", "dir", "token.keys is a symbolic link"


def hmac_key_file_too_short(s: Setup) -> tuple[str, str, str]:
    s.sections["state"]["hmac_key_file"] = str(s.private("hmac.key", "short\n"))
    return "state", "hmac_key_file", "is 5 bytes; at least 32 are required"


def hmac_key_file_readable_by_others(s: Setup) -> tuple[str, str, str]:
    s.sections["state"]["hmac_key_file"] = str(s.private("hmac.key", "a" * 64, mode=0o644))
    return "state", "hmac_key_file", "has mode 0644: others may access it"


def users_file_bad_line(s: Setup) -> tuple[str, str, str]:
    s.private("users", f"admin:admin:{_HASH}\nbob:viewer\n")
    return "auth", "users_file", f"{s.root / 'users'}:2: expected name:role:hash"


def users_file_not_utf8(s: Setup) -> tuple[str, str, str]:
    s.private("users", f"# caf\xe9\nadmin:admin:{_HASH}\n".encode("latin-1"))
    return "auth", "users_file", f"{s.root / 'users'}:1: not UTF-8 text (byte 0xe9)"


def users_file_readable_by_others(s: Setup) -> tuple[str, str, str]:
    (s.root / "users").chmod(0o644)
    return "auth", "users_file", "has mode 0644: others may access it"


def certificate_not_pem(s: Setup) -> tuple[str, str, str]:
    _, key = s.pair("pki")
    s.sections["tls"] = {"cert_file": str(s.private("server.crt", b"\x30\x82 not pem", mode=0o644)),
                         "key_file": str(key)}
    return "tls", "cert_file", "is not a PEM certificate"


def key_not_pem(s: Setup) -> tuple[str, str, str]:
    cert, _ = s.pair("pki")
    s.sections["tls"] = {"cert_file": str(cert), "key_file": str(s.private("server.key", "garbage\n"))}
    return "tls", "key_file", "is not a PEM private key"


def key_of_another_certificate(s: Setup) -> tuple[str, str, str]:
    cert, _ = s.pair("pki")
    _, other_key = s.pair("other")
    s.sections["tls"] = {"cert_file": str(cert), "key_file": str(other_key)}
    return "tls", "key_file", "does not belong to the certificate"


def chain_file_not_pem(s: Setup) -> tuple[str, str, str]:
    cert, key = s.pair("pki")
    s.sections["tls"] = {"cert_file": str(cert), "key_file": str(key),
                         "ca_file": str(s.private("chain.pem", "not a certificate\n", mode=0o644))}
    return "tls", "ca_file", "holds no PEM certificate"


def self_signed_pair_damaged(s: Setup) -> tuple[str, str, str]:
    s.pair("state")
    s.private("state/tls-selfsigned.key", "damaged\n")
    return "state", "dir", "the self-signed certificate kept there cannot be served"


def token_keys_not_fernet(s: Setup) -> tuple[str, str, str]:
    s.sections["tokens"] = {"keys_file": str(s.private("token.keys", "not-a-key\n"))}
    return "tokens", "keys_file", "key 1 is not a Fernet key"


def audit_directory_missing(s: Setup) -> tuple[str, str, str]:
    s.sections["audit"]["file"] = str(s.root / "no-such-dir" / "audit.log")
    return "audit", "file", "does not exist"


def metrics_module_missing(s: Setup) -> tuple[str, str, str]:
    # prometheus_client is a dependency of the appliance now; luigi's datadog collector needs
    # a module nobody installed.
    s.sections["scheduler"] = {"metrics_collector": "datadog"}
    return "scheduler", "metrics_collector", "the Python module datadog is not installed"


def custom_metrics_module_missing(s: Setup) -> tuple[str, str, str]:
    s.sections["scheduler"] = {"metrics_collector": "custom", "metrics_custom_import": "no_such_module.Collector"}
    return "scheduler", "metrics_custom_import", "the Python module no_such_module is not installed"


def ldap_bind_password_not_utf8(s: Setup) -> tuple[str, str, str]:
    s.sections["auth"]["backend"] = "ldap, local"
    s.sections["ldap"] = {"servers": "ldaps://ldap.example.com", "user_base": "ou=people,dc=example,dc=com",
                          "bind_dn": "uid=search,dc=example,dc=com",
                          "bind_password_file": str(s.private("bind.pw", b"\xff\xfe\n"))}
    s.sections["roles"] = {"admins": "admin"}
    return "ldap", "bind_password_file", "is not UTF-8 text"


def history_ca_not_pem(s: Setup) -> tuple[str, str, str]:
    s.sections["history"] = {"backend": "postgresql", "host": "db.example.com",
                             "sslrootcert": str(s.private("db-ca.pem", "nothing\n", mode=0o644))}
    return "history", "sslrootcert", "holds no PEM certificate"


def socket_directory_missing(s: Setup) -> tuple[str, str, str]:
    s.sections["server"] = {"listen": f"unix:{s.root / 'no-such-dir' / 'scheduler.sock'}"}
    return "server", "listen", "the socket's directory"


# Cases that break different things, applied together: every problem is listed at once, so one
# pair of runs checks several refusals. Cases in different groups cannot be combined (the same key,
# a state directory that is no directory, a problem found while reading the file that stops the
# checks of what serve would do with it).
GROUPS: list[list[Case]] = [
    [state_dir_open_to_others, state_key_too_short, generation_file_garbage, link_in_state_dir,
     users_file_bad_line, certificate_not_pem, token_keys_not_fernet, audit_directory_missing,
     metrics_module_missing, ldap_bind_password_not_utf8, history_ca_not_pem, socket_directory_missing],
    [state_dir_is_a_link, hmac_key_file_too_short, users_file_not_utf8, key_not_pem, custom_metrics_module_missing],
    [state_dir_is_a_file, users_file_readable_by_others, key_of_another_certificate],
    [self_signed_pair_damaged],
    [chain_file_not_pem],
    [hmac_key_file_readable_by_others],
]


@pytest.mark.parametrize("cases", GROUPS, ids=["+".join(c.__name__ for c in g) for g in GROUPS])
def test_config_check_and_serve_refuse_alike_naming_the_line(tmp_path: Path, cases: list[Case]) -> None:
    setup = Setup(tmp_path)
    expected = [case(setup) for case in cases]
    conf, where = setup.write()
    before = _tree(tmp_path)
    check = cli("--config", str(conf), "config", "check", timeout=60)
    assert _tree(tmp_path) == before, "config check created or changed a file"
    serve = cli("--config", str(conf), "serve", timeout=60)
    assert _tree(tmp_path) == before, "serve created or changed a file before refusing"
    for result in (check, serve):
        assert "Traceback" not in result.stderr, result.stderr
        assert result.returncode == 1, result.stdout + result.stderr
    listing = check.stderr.splitlines()
    assert listing[0] == f"luigi-appliance: {len(cases)} configuration error(s):", check.stderr
    for section, key, message in expected:
        at = f"  {conf}:{where[(section, key)]}: [{section}] {key}: "
        assert [line for line in listing if line.startswith(at) and message in line], (at, message, check.stderr)
    assert serve.stderr == check.stderr


def test_the_unbroken_setup_is_servable(tmp_path: Path) -> None:
    """The cases' starting point passes: each refusal above is the case's own."""
    conf, _ = Setup(tmp_path).write()
    result = cli("--config", str(conf), "config", "check")
    assert result.returncode == 0, result.stderr
    assert not (tmp_path / "state" / "state.key").exists()


def test_config_show_output_reads_back_as_the_same_configuration(tmp_path: Path) -> None:
    setup = Setup(tmp_path)
    key_file = setup.root / "secret.key"
    encrypted = cli("secret", "encrypt", "--key-file", str(key_file), input="x" * 40 + "\n").stdout.strip()
    setup.sections["state"]["hmac_key"] = encrypted  # an enc: value: redacted, left as a comment
    setup.sections["server"]["trusted_proxies"] = "unix, 10.0.0.0/8"
    setup.sections["ldap"] = {"servers": "ldaps://a.example.com ldaps://b.example.com"}
    setup.sections["scheduler"] = {"retry_delay": "60"}
    setup.sections["resources"] = {"warehouse": "2"}
    conf, _ = setup.write()
    shown = cli("--config", str(conf), "config", "show")
    assert shown.returncode == 0, shown.stderr
    lines = shown.stdout.splitlines()
    # Comments on lines of their own: no value carries one.
    assert not [line for line in lines if not line.startswith("#") and "#" in line]
    again = write_config(tmp_path / "again.conf", shown.stdout)
    check = cli("--config", str(again), "config", "check")
    assert check.returncode == 0, check.stderr
    reshown = cli("--config", str(again), "config", "show").stdout
    # The same values; only their origins (the comments) and the redacted secret differ.
    def values(text: str) -> list[str]:
        return [line for line in text.splitlines() if not line.startswith("#") and "hmac_key" not in line]
    assert values(reshown) == values(shown.stdout)
    assert "servers = ldaps://a.example.com, ldaps://b.example.com" in lines


def test_a_byte_order_mark_is_refused_by_check_and_serve_at_line_one(tmp_path: Path) -> None:
    setup = Setup(tmp_path)
    conf, _ = setup.write()
    conf.write_bytes(b"\xef\xbb\xbf" + conf.read_bytes())
    check = cli("--config", str(conf), "config", "check")
    serve = cli("--config", str(conf), "serve", timeout=60)
    assert check.returncode == serve.returncode == 1
    assert f"{conf}:1: the file starts with a UTF-8 byte-order mark" in check.stderr
    assert serve.stderr == check.stderr and "Traceback" not in serve.stderr

