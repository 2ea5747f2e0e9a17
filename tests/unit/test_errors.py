"""Exit codes combine in one place, and a job's warnings are collected one way."""

from __future__ import annotations

import logging
import signal

import pytest

from vcbproxy import errors


@pytest.mark.parametrize(
    "codes, expected",
    [
        ([], errors.OK),
        ([0, 0], errors.OK),
        ([0, 3, 0], errors.WARNINGS),
        ([3, 1], errors.FAILURE),  # any failure outranks "done with warnings"
        ([14, 3, 11], errors.STAGING),
        ([11, 14], errors.STAGING),  # the order does not matter
        ([16, 130, 3], errors.SIGINT),  # an interrupt outranks everything
    ],
)
def test_the_most_severe_exit_code_wins(codes, expected):
    assert errors.worst(codes) == expected
    assert errors.worst(iter(codes)) == expected


def test_outcome_collects_warnings_and_says_the_exit_code(caplog):
    outcome = errors.Outcome()
    assert outcome.exit_code == errors.OK
    with caplog.at_level(logging.WARNING):
        outcome.warn("disk skipped", logging.getLogger("vcbproxy.test"))
    assert outcome.warnings == ["disk skipped"] and outcome.exit_code == errors.WARNINGS
    assert [(r.name, r.getMessage()) for r in caplog.records] == [("vcbproxy.test", "disk skipped")]
    outcome.error = errors.LockError("locked")
    assert outcome.exit_code == errors.LOCK


def test_interrupted_is_no_vcbproxy_error_and_carries_its_signal_code():
    assert not issubclass(errors.Interrupted, Exception)
    assert errors.Interrupted(signal.SIGINT).exit_code == errors.SIGINT
    assert errors.Interrupted(signal.SIGTERM).exit_code == errors.SIGTERM
