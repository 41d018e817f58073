"""The worker's watchdogs: a table recovery waiting for records Faust's consumer fetched and
dropped (streams.recovery), and checks that fail for a moment. The whole worker is exercised
by tests/test_reliability.py's rebalance; here the decisions, on the figures a stuck worker
showed."""

from __future__ import annotations

import logging

import pytest

from streams.recovery import STALL, stalled

P = "twins-changelog:1"


def test_a_recovery_stuck_behind_its_consumer_is_sought_back() -> None:
    # what a stuck worker logged: changelog offsets 0..71, none applied, the consumer at 72
    assert stalled({P: -1}, {P: 71}, {P: 72}, {}, started=0.0, now=STALL + 1) == {P: 0}
    # part applied, then nothing for a while: read again from the first record not applied
    assert stalled({P: 40}, {P: 71}, {P: 72}, {P: 100.0}, started=0.0, now=100 + STALL) == {P: 41}
    assert stalled({P: None}, {P: 71}, {P: 72}, {}, started=0.0, now=STALL) == {P: 0}


def test_a_recovery_under_way_is_left_alone() -> None:
    # records still coming
    assert stalled({P: 40}, {P: 71}, {P: 72}, {P: 100.0}, started=0.0, now=100 + STALL / 2) == {}
    # just started
    assert stalled({P: -1}, {P: 71}, {P: 72}, {}, started=50.0, now=50 + STALL / 2) == {}
    # the consumer has not fetched past what was applied: the records are on their way
    assert stalled({P: 40}, {P: 71}, {P: 41}, {P: 0.0}, started=0.0, now=1000) == {}
    assert stalled({P: -1}, {P: 71}, {P: None}, {}, started=0.0, now=1000) == {}


def test_a_partition_recovered_or_empty_is_left_alone() -> None:
    assert stalled({P: 71}, {P: 71}, {P: 72}, {P: 0.0}, started=0.0, now=1000) == {}
    assert stalled({P: -1}, {P: -1}, {P: 0}, {}, started=0.0, now=1000) == {}
    assert stalled({P: -1}, {P: None}, {P: 5}, {}, started=0.0, now=1000) == {}


def test_each_partition_is_judged_alone() -> None:
    done, stuck = "twins-changelog:0", "twins-changelog:1"
    applied, highwaters = {done: 9, stuck: 3}, {done: 9, stuck: 20}
    assert stalled(applied, highwaters, {done: 10, stuck: 21}, {done: 90.0, stuck: 80.0}, 0.0, 80 + STALL) == {stuck: 4}


async def test_a_check_that_fails_is_logged_and_runs_again(caplog: pytest.LogCaptureFixture) -> None:
    # an exception out of a Faust timer ends it for good: the worker's checks log and go on
    from streams.app import _going_on

    calls = []

    async def tail_check() -> None:
        calls.append(1)
        raise ConnectionError("broker away")

    timer = _going_on(tail_check)
    with caplog.at_level(logging.WARNING, logger="twin.worker"):
        await timer()
        await timer()
    assert len(calls) == 2
    assert "tail_check failed (ConnectionError('broker away'))" in caplog.text
