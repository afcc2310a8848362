"""Configuration text as editors leave it: a byte-order mark, bytes that are not UTF-8, and typos in
section and key names, each reported at its file and line (never as a UnicodeDecodeError)."""

from __future__ import annotations

from pathlib import Path

import pytest

from luigi_appliance.config_loader import load_settings
from luigi_appliance.errors import ConfigError
from luigi_appliance.settings.inifile import read_files
from luigi_appliance.settings.issues import ConfigIssue


def _issues(path: Path) -> list[ConfigIssue]:
    issues: list[ConfigIssue] = []
    read_files([path], issues)
    return issues


def _refusals(tmp_path: Path, text: str) -> list[str]:
    conf = tmp_path / "s.conf"
    conf.write_text(text)
    with pytest.raises(ConfigError) as err:
        load_settings([conf], check_files=False)
    return [str(issue) for issue in err.value.issues]


def test_a_byte_order_mark_is_reported_at_line_one_and_the_rest_is_read(tmp_path: Path) -> None:
    conf = tmp_path / "s.conf"
    conf.write_bytes(b"\xef\xbb\xbf[server]\nlisten = 127.0.0.1:1\n")
    issues: list[ConfigIssue] = []
    doc = read_files([conf], issues)
    assert [(i.line, i.message) for i in issues] == [
        (1, "the file starts with a UTF-8 byte-order mark; save it as UTF-8 without BOM")]
    entry = doc.get("server", "listen")
    assert entry is not None and (entry.value, entry.line) == ("127.0.0.1:1", 2)


def test_each_line_that_is_not_utf8_is_reported_with_its_line(tmp_path: Path) -> None:
    conf = tmp_path / "s.conf"
    conf.write_bytes(b"[server]\r\n# caf\xe9\r\nlisten = 127.0.0.1:1\r\nbanner = \xff\xfe\r\n")
    assert [str(i) for i in _issues(conf)] == [
        f"{conf}:2: byte 0xe9 at column 6 is not UTF-8; save the file as UTF-8",
        f"{conf}:4: byte 0xff at column 10 is not UTF-8; save the file as UTF-8"]


def test_line_numbers_count_newlines_only(tmp_path: Path) -> None:
    # A form feed is a line break for str.splitlines but not for an editor.
    conf = tmp_path / "s.conf"
    conf.write_text("[server]\n# page\x0cbreak\nlisten = x\n")
    issues: list[ConfigIssue] = []
    doc = read_files([conf], issues)
    entry = doc.get("server", "listen")
    assert issues == [] and entry is not None and entry.line == 3


def test_an_unknown_key_close_to_a_known_one_gets_a_suggestion(tmp_path: Path) -> None:
    (refusal,) = _refusals(tmp_path, "[server]\nlisten_adress = 127.0.0.1:1\n")
    assert refusal.startswith(f"{tmp_path / 's.conf'}:2: [server] listen_adress: unknown key; did you mean 'listen'?")
    (refusal,) = _refusals(tmp_path, "[server]\ncolour = blue\n")
    assert "did you mean" not in refusal and "unknown key; expected one of" in refusal


def test_an_unknown_section_close_to_a_known_one_gets_a_suggestion(tmp_path: Path) -> None:
    (refusal,) = _refusals(tmp_path, "[histroy]\n")
    assert refusal.startswith(f"{tmp_path / 's.conf'}:1: [histroy]: unknown section; did you mean 'history'? "
                              "(expected one of approval.NAME, approvals, audit, auth, ")


def test_an_unknown_luigi_option_close_to_a_known_one_gets_a_suggestion(tmp_path: Path) -> None:
    (refusal,) = _refusals(tmp_path, "[scheduler]\nretry_dealy = 5\n")
    assert "[scheduler] retry_dealy: unknown luigi scheduler option; did you mean 'retry_delay'?" in refusal
