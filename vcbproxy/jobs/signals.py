"""Signals turned into exceptions (borg-style), so every ``finally`` — above all the one
that removes the backup snapshot — runs on Ctrl-C and SIGTERM as on any error."""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator

from vcbproxy.errors import Interrupted


def _raise(signum, _frame):
    # Ignore repeats while cleanup runs: a second Ctrl-C must not abort snapshot removal.
    signal.signal(signum, signal.SIG_IGN)
    raise Interrupted(signum)


@contextlib.contextmanager
def signals_raise() -> Iterator[None]:
    """Within the block, SIGINT and SIGTERM raise :class:`Interrupted` in the main thread."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {s: signal.signal(s, _raise) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def raise_if_cancelled(cancel: threading.Event) -> None:
    """In a worker thread (``mount --jobs``), where no signal arrives: stop as the main thread
    was told to, with the same exception."""
    if cancel.is_set():
        raise Interrupted(signal.SIGTERM)


@contextlib.contextmanager
def shielded() -> Iterator[None]:
    """Block SIGINT/SIGTERM for a critical cleanup step; they are delivered afterwards."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    sigs = {signal.SIGINT, signal.SIGTERM}
    old = signal.pthread_sigmask(signal.SIG_BLOCK, sigs)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)
