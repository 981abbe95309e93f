"""The admission rules alone (no I/O: the time is passed in)."""

from __future__ import annotations

from batchtunnel.broker.admission import MAX_ADDRESSES, Admission


def test_the_pending_cap_admits_up_to_its_limit_and_counts_refusals() -> None:
    rules = Admission(max_pending=4)
    assert rules.open("a") and rules.open("b") and rules.open("c") and rules.open("d")
    assert not rules.open("e")
    assert rules.refused_pending_total == 1
    rules.done("b")
    assert rules.open("e")


def test_one_address_holds_at_most_half_of_the_cap() -> None:
    rules = Admission(max_pending=8, unshared=frozenset({"proxy"}))
    assert all(rules.open("crowd") for _ in range(4))
    assert not rules.open("crowd")  # its share is taken; others still get in
    assert rules.refused_share_total == 1
    assert all(rules.open("agent") for _ in range(2))
    rules.done("crowd")
    assert rules.open("crowd")
    relay = Admission(max_pending=8, unshared=frozenset({"proxy"}))
    assert all(relay.open("proxy") for _ in range(8))  # a trusted reverse proxy carries every agent


def test_failures_block_an_address_doubling_up_to_the_maximum() -> None:
    rules = Admission(failure_limit=3, max_block=5.0)
    now = 1000.0
    assert [rules.failed("10.0.0.1", now) for _ in range(2)] == [0.0, 0.0]
    assert rules.blocked_for("10.0.0.1", now) == 0.0
    blocks = [rules.failed("10.0.0.1", now) for _ in range(5)]
    assert blocks == [1.0, 2.0, 4.0, 5.0, 5.0]
    assert rules.blocked_for("10.0.0.1", now + 1) == 4.0
    assert rules.blocked_for("10.0.0.2", now) == 0.0  # another address is not affected
    assert rules.blocked_for("10.0.0.1", now + 5) == 0.0


def test_failures_count_within_a_window_and_no_success_clears_them() -> None:
    """Nothing clears failures but time: interleaving one's own valid token between guesses does not
    reset the count; failures older than the window no longer count."""
    rules = Admission(failure_limit=3, window=60.0)
    assert [rules.failed("a", t) for t in (0.0, 10.0)] == [0.0, 0.0]
    assert rules.failed("a", 20.0) == 1.0  # the third within 60 s
    assert [rules.failed("b", t) for t in (0.0, 50.0, 100.0, 150.0)] == [0.0] * 4  # never 3 within 60 s


def test_the_failure_table_is_bounded() -> None:
    rules = Admission()
    for i in range(MAX_ADDRESSES + 100):
        rules.failed(f"10.{i // 65536}.{i // 256 % 256}.{i % 256}", float(i))
    assert rules.addresses_tracked == MAX_ADDRESSES
