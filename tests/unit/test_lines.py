"""vcbproxy.lines: names in line-based outputs stay on one line and read back exactly."""

from __future__ import annotations

import logging

import pytest

from vcbproxy.lines import OneLineFormatter, escape, unescape


@pytest.mark.parametrize(
    ("raw", "shown"),
    [
        ("web01", "web01"),
        ("my vm ünïcode / test", "my vm ünïcode / test"),
        ("a\nb", "a\\nb"),
        ("a\tb\rc", "a\\tb\\rc"),
        ("esc\x1b[31m", "esc\\x1b[31m"),
        ("nul\x00del\x7f", "nul\\x00del\\x7f"),
        ("c1\x85ls\u2028ps\u2029", "c1\\x85ls\\u2028ps\\u2029"),
        ("back\\slash", "back\\\\slash"),
        ("\\n literally", "\\\\n literally"),
    ],
)
def test_escape_is_one_line_and_unescape_gives_the_name_back(raw, shown):
    assert escape(raw) == shown
    assert len(shown.splitlines()) <= 1 and "\r" not in shown and "\n" not in shown
    assert unescape(shown) == raw


def test_a_backslash_that_starts_no_escape_reads_as_itself():
    assert unescape("C:\\dir") == "C:\\dir"


def test_formatter_keeps_a_record_on_one_line_and_the_traceback_after_it():
    fmt = OneLineFormatter("%(levelname)s %(message)s")
    record = logging.LogRecord(
        "vcbproxy", logging.INFO, __file__, 1, "export of %s", ("a\nb",), None
    )
    assert fmt.format(record) == "INFO export of a\\nb"
    assert record.getMessage() == "export of a\nb"  # the record itself is left as it was
    try:
        raise ValueError("x")
    except ValueError:
        import sys

        record.exc_info = sys.exc_info()
    lines = fmt.format(record).splitlines()
    assert lines[0] == "INFO export of a\\nb" and lines[1].startswith("Traceback")
