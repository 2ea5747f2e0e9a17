"""Server-provided text (VM and snapshot names) in line-based outputs: one line, reversibly.

vSphere allows a newline, a tab or a carriage return in a display name. Written raw, such a
name splits a ``name:`` line of ``vcbproxy vms`` (vcbVmName) in two, forges a ``key= value``
line of the catalog, and breaks a log record in two (the second half looking like a record of
its own). So wherever a name goes into a line-based output, control characters are written
as C-style escapes (``\\n``, ``\\t``, ``\\r``, ``\\xHH``) and a backslash as ``\\\\``, the way
``sha256sum`` escapes file names: the line stays one line, and :func:`unescape` gives the name
back exactly. vSphere itself shows a backslash in a name as ``%5c``, so names as the server
sends them never contain one and print unchanged unless they hold a control character.
File names are a different matter: :mod:`vcbproxy.staging.names` replaces such characters.
"""

from __future__ import annotations

import logging
import re
import unicodedata

_NAMED = {"\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t"}
_UNNAMED = {v: k for k, v in _NAMED.items()}
_ESCAPE = re.compile(r"\\(?:[\\nrt]|x[0-9a-fA-F]{2}|u[0-9a-fA-F]{4})")


def _escape_char(ch: str) -> str:
    if ch in _NAMED:
        return _NAMED[ch]
    if unicodedata.category(ch) in ("Cc", "Zl", "Zp"):  # C0/C1 controls, U+2028, U+2029
        code = ord(ch)
        return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"
    return ch


def escape(text: str) -> str:
    """``text`` on one line: control characters and backslashes escaped (reversibly)."""
    if text.isprintable() and "\\" not in text:
        return text  # the usual case, unchanged
    return "".join(_escape_char(ch) for ch in text)


def unescape(text: str) -> str:
    """The text :func:`escape` was given; a backslash not starting an escape stays as it is."""
    if "\\" not in text:
        return text

    def one(match: re.Match) -> str:
        seq = match.group(0)
        return _UNNAMED.get(seq) or chr(int(seq[2:], 16))

    return _ESCAPE.sub(one, text)


class OneLineFormatter(logging.Formatter):
    """A log format whose message is always one line (:func:`escape`), whatever names it
    holds; only an exception's traceback, appended after it, spans lines."""

    def formatMessage(self, record: logging.LogRecord) -> str:  # noqa: N802 (logging's name)
        message = record.message
        record.message = escape(message)
        try:
            return super().formatMessage(record)
        finally:
            record.message = message
