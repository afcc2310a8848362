"""[ha]: off by default, and every refusal a pair of nodes would hit is reported at its file and line,
by the loader and by ``luigi-appliance config check`` alike."""

from __future__ import annotations

from pathlib import Path

import pytest

from luigi_appliance.config_loader import load_settings
from luigi_appliance.errors import ConfigError
from luigi_appliance.ha.settings import HaSettings, short_hostname

PAIR = """[state]
hmac_key_file = /etc/luigi-appliance/state-hmac.key
[ha]
backend = postgresql
host = db.example.com
password_file = /etc/luigi-appliance/ha.password
sslrootcert = /etc/luigi-appliance/tls/db-ca.pem
node_name = sched1
advertise_url = https://sched1.example.com:8082/
"""


def write(tmp_path: Path, text: str) -> Path:
    conf = tmp_path / "scheduler.conf"
    conf.write_text(text)
    conf.chmod(0o640)
    return conf


def problems(tmp_path: Path, text: str) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load_settings([write(tmp_path, text)], check_files=False)
    return [str(issue) for issue in caught.value.issues]


def test_off_by_default_with_the_documented_defaults(tmp_path: Path) -> None:
    ha = load_settings([write(tmp_path, "[ha]\n")], check_files=False).ha
    assert ha == HaSettings()
    assert not ha.enabled and ha.backend == "none"
    assert (ha.schema, ha.node_name, ha.advertise_url) == ("luigi_ha", short_hostname(), None)
    assert (ha.lease_ttl, ha.renew_every, ha.poll_interval, ha.max_batch, ha.compact_interval) == (
        5.0, 5.0 / 3, 1.0, 200, 60.0)
    assert (ha.host, ha.port, ha.dbname, ha.user, ha.sslmode, ha.connect_timeout) == (
        "localhost", 5432, "luigi", "luigi_scheduler", "disable", 5.0)


def test_a_node_of_a_pair_loads(tmp_path: Path) -> None:
    ha = load_settings([write(tmp_path, PAIR + "lease_ttl = 10s\nrenew_interval = 5s\n")], check_files=False).ha
    assert ha.enabled and ha.node_name == "sched1" and ha.advertise_url == "https://sched1.example.com:8082/"
    assert ha.sslmode == "verify-full" and ha.password_file == Path("/etc/luigi-appliance/ha.password")
    assert (ha.lease_ttl, ha.renew_every) == (10.0, 5.0)
    assert not ha.is_insecure


def test_every_refusal_names_its_file_and_line(tmp_path: Path) -> None:
    conf = tmp_path / "scheduler.conf"
    assert problems(tmp_path, """[ha]
backend = postgresql
host = db.example.com
sslmode = require
lease_ttl = 4s
renew_interval = 3s
node_name = sched 1
schema = Luigi-HA
max_batch = 0
advertise_url = ftp://sched1/
poll_interval = 0.01s
""") == [  # an invalid advertise_url is not also reported missing
        f"{conf}:2: [ha] backend: backend = postgresql needs [state] hmac_key_file = PATH (or hmac_key = "
        "enc:...), the same key on both nodes: each node verifies the snapshots the other one signed",
        f"{conf}:4: [ha] sslmode: sslmode = require does not verify that db.example.com is the database server "
        "(verify-full does); refused for a non-local host unless allow_insecure = true",
        f"{conf}:6: [ha] renew_interval: renew_interval = 3s is more than half of lease_ttl = 4s: one late "
        "renewal would lose the lease; use at most lease_ttl / 2 (unset: lease_ttl / 3)",
        f"{conf}:7: [ha] node_name: expected 1 to 63 letters, digits, '.', '_' or '-', got 'sched 1'",
        f"{conf}:8: [ha] schema: expected a schema name of lower-case letters, digits and _ (at most 55, not "
        "starting with a digit), got 'Luigi-HA'",
        f"{conf}:9: [ha] max_batch: expected an integer between 1 and 10000, got 0",
        f"{conf}:10: [ha] advertise_url: expected the URL workers reach this node at, as https://HOST:PORT/, "
        "got 'ftp://sched1/'",
        f"{conf}:11: [ha] poll_interval: expected a duration between 0.05s and 30s, got 0.01s",
    ]


def test_a_pair_needs_its_url_its_state_key_and_a_verified_server(tmp_path: Path) -> None:
    conf = tmp_path / "scheduler.conf"
    assert problems(tmp_path, "[ha]\nbackend = postgresql\nhost = db.example.com\n") == [
        f"{conf}:2: [ha] advertise_url: backend = postgresql needs advertise_url, the URL workers reach this "
        "node at (the standby names it to them), e.g. advertise_url = https://sched1.example.com:8082/",
        f"{conf}:2: [ha] backend: backend = postgresql needs [state] hmac_key_file = PATH (or hmac_key = "
        "enc:...), the same key on both nodes: each node verifies the snapshots the other one signed",
        f"{conf}:3: [ha] sslrootcert: sslmode = verify-full needs sslrootcert, the CA certificate(s) that signed "
        "the database server's certificate, e.g. sslrootcert = /etc/luigi-appliance/tls/db-ca.pem",
    ]
    # Without [ha] backend = postgresql nothing of it is required.
    load_settings([write(tmp_path, "[ha]\nhost = db.example.com\nrenew_interval = 1m\n")], check_files=False)


@pytest.mark.parametrize("url", ["https://sched1.example.com:8082/", "http://10.0.0.1:8082", "https://[::1]:8082/lui/"])
def test_advertise_urls_accepted(tmp_path: Path, url: str) -> None:
    text = PAIR.replace("https://sched1.example.com:8082/", url)
    assert load_settings([write(tmp_path, text)], check_files=False).ha.advertise_url == url


@pytest.mark.parametrize("url", ["sched1:8082", "https://user:pw@sched1/", "https://sched1:0/", "https://sched1/?a=1",
                                 "https://sched1:99999/"])
def test_advertise_urls_refused(tmp_path: Path, url: str) -> None:
    found = problems(tmp_path, PAIR.replace("https://sched1.example.com:8082/", url))
    assert found == [f"{tmp_path / 'scheduler.conf'}:9: [ha] advertise_url: expected the URL workers reach this "
                     f"node at, as https://HOST:PORT/, got {url!r}"]
