"""LoginThrottle.clear: what ``user unlock`` lifts on the running scheduler, and what it leaves."""

from __future__ import annotations

import pytest

from luigi_appliance.auth.throttle import Cleared, LoginThrottle


def test_clear_lifts_the_name_and_every_address_only_its_failures_locked() -> None:
    throttle = LoginThrottle(limit=2, window=60, lockout=300)
    throttle.failed("alice", "192.0.2.1", now=0)
    assert throttle.failed("alice", "192.0.2.1", now=1) == 0  # name and address locked
    throttle.failed("alice", "198.51.100.7", now=2)
    assert throttle.locked("alice", None, now=3) > 0
    assert throttle.locked("bob", "192.0.2.1", now=3) > 0  # the address is locked for everybody

    assert throttle.clear("ALICE", now=3) == Cleared(True, ("192.0.2.1",), ())  # any spelling
    assert throttle.locked("alice", "192.0.2.1", now=3) == 0
    assert throttle.locked("bob", "192.0.2.1", now=3) == 0
    # alice's failure at the second address was forgotten too: two more lock her again, not one.
    assert throttle.failed("alice", "198.51.100.7", now=4) == 1


def test_an_address_locked_by_other_names_too_stays_locked() -> None:
    throttle = LoginThrottle(limit=3, window=60, lockout=300)
    throttle.failed("alice", "192.0.2.1", now=0)
    throttle.failed("bob", "192.0.2.1", now=1)
    assert throttle.failed("carol", "192.0.2.1", now=2) == 0  # three names guessed from one address
    assert throttle.clear("alice", now=3) == Cleared(False, (), ("192.0.2.1",))
    assert throttle.locked("alice", "192.0.2.1", now=3) == pytest.approx(299)
    assert throttle.locked("alice", None, now=3) == 0


def test_clear_keeps_other_names_counts() -> None:
    throttle = LoginThrottle(limit=3, window=60, lockout=300)
    throttle.failed("alice", "192.0.2.1", now=0)
    throttle.failed("bob", "192.0.2.1", now=1)
    assert throttle.clear("alice", now=2) == Cleared(False, (), ())
    # The address holds bob's two failures: alice's left it (with it, this one locked it).
    assert throttle.failed("bob", "192.0.2.1", now=3) == 2
    assert throttle.failed("dave", "192.0.2.1", now=4) == 0  # bob's count stayed: now three
