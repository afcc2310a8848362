"""Configuration: strict validation with file/line/key in every error, via the real CLI."""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import REPO, cli, write_config
from luigi_appliance.config_loader import load_settings
from luigi_appliance.errors import ConfigError


def runtime_paths(tmp_path: Path) -> str:
    """Sections putting what serve writes (state, audit trail) under ``tmp_path``: the defaults
    are under /var, which serve, and so config check, refuses when it cannot write there."""
    return f"[state]\ndir = {tmp_path}/state\n[audit]\nfile = {tmp_path}/audit.log\n"


def check(conf: Path) -> tuple[int, str]:
    result = cli("--config", str(conf), "config", "check")
    return result.returncode, result.stdout + result.stderr


def test_every_error_is_reported_at_once_with_file_and_line(tmp_path: Path) -> None:
    conf = write_config(tmp_path / "scheduler.conf", """\
# comment
[server]
listen = 127.0.0.1:99999
max_body_bytes = lots
colour = blue

[tls]
min_version = 1.1

[scheduler]
retry_delay = soon
state_path = /tmp/x
no_such_option = 1

[nonsense]
""")
    code, out = check(conf)
    assert code == 1
    # 8 in the file, plus the default users file that does not exist on this machine.
    assert "9 configuration error(s)" in out
    assert f"{conf}: [auth] users_file: file /etc/luigi-appliance/users does not exist" in out
    assert f"{conf}:3: [server] listen: expected a port between 1 and 65535, got 99999" in out
    assert f"{conf}:4: [server] max_body_bytes: expected an integer between" in out
    assert f"{conf}:5: [server] colour: unknown key; expected one of" in out
    assert f"{conf}:8: [tls] min_version: expected one of 1.2, 1.3, got '1.1'" in out
    assert f"{conf}:11: [scheduler] retry_delay: expected a float value for luigi" in out
    assert f"{conf}:12: [scheduler] state_path: the appliance keeps state under [state] dir" in out
    assert f"{conf}:13: [scheduler] no_such_option: unknown luigi scheduler option" in out
    assert f"{conf}:15: [nonsense]: unknown section" in out


def test_unknown_luigi_option_names_line(tmp_path: Path) -> None:
    conf = write_config(tmp_path / "s.conf", "[scheduler]\nretry_delay = 5\nno_such_option = 1\n")
    with pytest.raises(ConfigError) as err:
        load_settings([conf], check_files=False)
    assert [(i.line, i.key) for i in err.value.issues] == [(3, "no_such_option")]
    assert "unknown luigi scheduler option" in str(err.value)


def test_syntax_errors_and_duplicates_name_lines(tmp_path: Path) -> None:
    conf = write_config(tmp_path / "s.conf", "orphan = 1\n[server]\nthis line is wrong\nlisten = 127.0.0.1:1\n"
                        "listen = 127.0.0.1:2\n  indented = continuation\n")
    with pytest.raises(ConfigError) as err:
        load_settings([conf], check_files=False)
    assert [i.line for i in err.value.issues] == [1, 3, 5, 6]


def make_users(tmp_path: Path) -> Path:
    users = tmp_path / "users"
    assert cli("user", "--users-file", str(users), "add", "a", input="a-long-password\n").returncode == 0
    return users


def test_dropins_apply_in_lexical_order_and_errors_name_the_dropin(tmp_path: Path) -> None:
    conf = write_config(tmp_path / "scheduler.conf",
                        f"[server]\nlisten = 127.0.0.1:8100\n[auth]\nusers_file = {make_users(tmp_path)}\n"
                        f"{runtime_paths(tmp_path)}")
    dropins = tmp_path / "scheduler.conf.d"
    dropins.mkdir()
    write_config(dropins / "20-port.conf", "[server]\nlisten = 127.0.0.1:8300\n")
    write_config(dropins / "10-port.conf", "[server]\nlisten = 127.0.0.1:8200\n")
    write_config(dropins / "ignored.txt", "[bogus]\n")
    result = cli("--config", str(conf), "config", "show")
    assert result.returncode == 0, result.stderr
    assert f"# {dropins / '20-port.conf'}:2\nlisten = 127.0.0.1:8300\n" in result.stdout
    write_config(dropins / "30-bad.conf", "[state]\nsnapshot_interval = 0\n")
    code, out = check(conf)
    assert code == 1 and f"{dropins / '30-bad.conf'}:2: [state] snapshot_interval:" in out


def test_missing_files_are_errors(tmp_path: Path) -> None:
    conf = write_config(tmp_path / "s.conf",
                        f"[tls]\ncert_file = {tmp_path}/nope.crt\nkey_file = {tmp_path}/nope.key\n")
    code, out = check(conf)
    assert code == 1
    assert f"{conf}:2: [tls] cert_file: file {tmp_path}/nope.crt does not exist" in out
    assert f"{conf}:3: [tls] key_file: file {tmp_path}/nope.key does not exist" in out
    code, out = check(tmp_path / "absent.conf")
    assert code == 1 and f"{tmp_path}/absent.conf: file not found" in out


def test_secrets_in_clear_are_refused_and_loose_secret_files_too(tmp_path: Path) -> None:
    key = tmp_path / "hmac.key"
    key.write_text("a" * 64)
    key.chmod(0o644)
    conf = write_config(tmp_path / "s.conf", f"[state]\nhmac_key = plaintext-secret-value\n[auth]\ncache_ttl = 5m\n"
                        f"[secrets]\nkey_file = {tmp_path}/secret.key\n")
    code, out = check(conf)
    assert code == 1 and f"{conf}:2: [state] hmac_key: secrets are not accepted in clear" in out
    assert "plaintext-secret-value" not in out
    conf = write_config(tmp_path / "s.conf", f"[state]\nhmac_key_file = {key}\n")
    code, out = check(conf)
    assert code == 1 and f"{conf}:2: [state] hmac_key_file: secret file {key} has mode 0644" in out
    key.chmod(0o600)
    users = make_users(tmp_path)
    conf = write_config(tmp_path / "s.conf", f"[state]\nhmac_key_file = {key}\n[auth]\nusers_file = {users}\n"
                        f"{runtime_paths(tmp_path)}")
    code, out = check(conf)
    assert code == 0, out


def test_enc_values_round_trip_and_are_redacted(tmp_path: Path) -> None:
    key_file = tmp_path / "secret.key"
    result = cli("secret", "encrypt", "--key-file", str(key_file), input="x" * 40 + "\n")
    assert result.returncode == 0, result.stderr
    enc = result.stdout.strip()
    assert enc.startswith("enc:") and "x" * 10 not in enc
    assert oct(key_file.stat().st_mode & 0o777) == oct(0o600)
    users = make_users(tmp_path)
    conf = write_config(tmp_path / "s.conf", f"[state]\nhmac_key = {enc}\n[secrets]\nkey_file = {key_file}\n"
                        f"[auth]\nusers_file = {users}\n{runtime_paths(tmp_path)}")
    settings = load_settings([conf])
    assert settings.state.hmac_key == b"x" * 40
    shown = cli("--config", str(conf), "config", "show")
    assert shown.returncode == 0 and "hmac_key = <redacted enc: value>" in shown.stdout
    assert "x" * 10 not in shown.stdout and enc not in shown.stdout
    # A value encrypted under another key names the key file, not the value.
    other = cli("secret", "encrypt", "--key-file", str(tmp_path / "other.key"), input="y" * 40 + "\n").stdout.strip()
    conf = write_config(tmp_path / "s.conf", f"[state]\nhmac_key = {other}\n[secrets]\nkey_file = {key_file}\n")
    code, out = check(conf)
    assert code == 1 and f"with the key in {key_file}" in out and other not in out


def test_plain_http_only_on_loopback(tmp_path: Path) -> None:
    conf = write_config(tmp_path / "s.conf", "[server]\nlisten = 0.0.0.0:8082\ninsecure_http = true\n")
    code, out = check(conf)
    assert code == 1 and f"{conf}:3: [server] insecure_http: plain HTTP is only allowed on a loopback" in out
    for listen in ("127.0.0.1:8082", "[::1]:8082", "unix:/run/luigi-appliance/s.sock"):
        write_config(conf, f"[server]\nlisten = {listen}\ninsecure_http = true\n")
        with pytest.raises(ConfigError) as err:  # only the users file is missing now
            load_settings([conf])
        assert [i.key for i in err.value.issues] == ["users_file"]


def test_shipped_example_config_is_valid() -> None:
    settings = load_settings([REPO / "etc" / "scheduler.conf"], check_files=False)
    assert settings.server.listen.port == 8082


def test_luigi_options_the_appliance_manages_are_refused(tmp_path: Path) -> None:
    conf = write_config(tmp_path / "s.conf", "[scheduler]\nrecord_task_history = true\nretry_delay = 60\n")
    with pytest.raises(ConfigError) as err:
        load_settings([conf], check_files=False)
    assert [(i.line, i.key) for i in err.value.issues] == [(2, "record_task_history")]
