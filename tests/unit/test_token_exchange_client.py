"""client.conf's ``auth = oidc-exchange``: where the subject token comes from, and how reading
it fails (one line naming the file or program, never the token). Real files and real programs
(the test's own Python interpreter), no mocks."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from luigi_appliance.client.credentials import Credentials, SubjectToken, load_identity
from luigi_appliance.client.settings import load_client_settings
from luigi_appliance.errors import ConfigError, CredentialsError

JWT = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJldGwifQ.c2lnbmF0dXJl"
OTHER_JWT = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJuZXcifQ.bmV3LXNpZ25hdHVyZQ"


def conf(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "client.conf"
    path.write_text(f"[client]\n{text}\n")
    return path


def issues(tmp_path: Path, text: str) -> list[str]:
    with pytest.raises(ConfigError) as refused:
        load_client_settings(conf(tmp_path, text), {})
    return [str(issue) for issue in refused.value.issues]


def test_oidc_exchange_needs_exactly_one_source_and_the_sources_need_it(tmp_path: Path) -> None:
    (problem,) = issues(tmp_path, "auth = oidc-exchange")
    assert "auth = oidc-exchange needs exactly one of subject_token_file" in problem and "client.conf:2" in problem
    token = tmp_path / "token"
    token.write_text(JWT)
    both = f"auth = oidc-exchange\nsubject_token_file = {token}\nsubject_token_command = /bin/cat"
    (problem,) = issues(tmp_path, both)
    assert "exactly one of" in problem
    (problem,) = issues(tmp_path, f"subject_token_file = {token}")
    assert "subject_token_file is used with auth = oidc-exchange only" in problem
    (problem,) = issues(tmp_path, "auth = oidc-exchange\nsubject_token_command = /bin/cat 'unclosed")
    assert "cannot split the command" in problem


def test_the_identity_is_the_subject_token_and_never_a_credentials_file(tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text(JWT + "\n")
    settings = load_client_settings(conf(tmp_path, f"auth = oidc-exchange\nsubject_token_file = {token}"), {})
    identity = load_identity(settings)
    assert isinstance(identity, SubjectToken) and identity.read() == JWT
    with pytest.raises(CredentialsError, match="--credentials-file goes with auth = token or basic"):
        load_identity(settings, tmp_path / "creds")
    creds = tmp_path / "creds"
    creds.write_text("etl:a-password-of-some-length\n")
    creds.chmod(0o600)
    password = load_identity(load_client_settings(conf(tmp_path, ""), {}), creds)
    assert isinstance(password, Credentials) and password.username == "etl"


def test_the_file_is_read_again_at_each_exchange(tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text(JWT)
    subject = SubjectToken(file=token)
    assert subject.read() == JWT
    token.write_text(OTHER_JWT)  # the platform rotated it
    assert subject.read() == OTHER_JWT
    token.unlink()
    with pytest.raises(CredentialsError, match=f"cannot read subject_token_file {token}: No such file"):
        subject.read()


def test_what_is_no_jwt_is_refused_without_showing_it(tmp_path: Path) -> None:
    token = tmp_path / "token"
    for text in ("", "username:secret-password", f"{JWT}\n{JWT}", "a.b c.d"):
        token.write_text(text)
        with pytest.raises(CredentialsError) as refused:
            SubjectToken(file=token).read()
        assert "not a JWT" in str(refused.value)
        assert "secret-password" not in str(refused.value)


# The programs are run with -S: in the RPM's %check a child with site processing would load the
# host's .pth hooks, which may patch the buildroot's certifi bundle (the spec refuses that).
def test_the_command_runs_without_a_shell_and_its_output_is_never_shown(tmp_path: Path) -> None:
    # $HOME, ; and * reach the program as written: no shell expanded them.
    command = (sys.executable, "-S", "-c", f"import sys; assert sys.argv[1:] == ['$HOME;', '*']; print({JWT!r})",
               "$HOME;", "*")
    assert SubjectToken(command=command).read() == JWT
    settings = load_client_settings(conf(tmp_path, "auth = oidc-exchange\nsubject_token_command = "
                                                   "/bin/echo 'two words' $HOME"), {})
    assert settings.subject_token_command == ("/bin/echo", "two words", "$HOME")


def test_a_failing_command_is_one_line_with_its_error_not_its_output(tmp_path: Path) -> None:
    failing = (sys.executable, "-S", "-c", f"import sys; print({JWT!r}); sys.exit('no token for you today')")
    with pytest.raises(CredentialsError) as refused:
        SubjectToken(command=failing).read()
    message = str(refused.value)
    assert message == f"subject_token_command {sys.executable} exited with 1: no token for you today"
    assert JWT not in message
    with pytest.raises(CredentialsError, match="cannot run subject_token_command /no/such/program"):
        SubjectToken(command=("/no/such/program",)).read()
    slow = (sys.executable, "-S", "-c", "import time; time.sleep(30)")
    with pytest.raises(CredentialsError, match="printed no token within 1s"):
        SubjectToken(command=slow, timeout=1).read()
