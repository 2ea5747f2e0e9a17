"""Exponential backoff for transfers that resume where they stopped."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from vcbproxy import errors

log = logging.getLogger(__name__)

MAX_DELAY = 30.0


class Backoff:
    """Counts consecutive failures; sleeps ``base * 2**(n-1)`` between attempts.

    Progress (at least one byte received) resets the count, so a long transfer over a
    flaky link survives many drops as long as each attempt moves forward.
    """

    def __init__(self, retries: int, base: float, on_retry: Callable[[], None] = lambda: None):
        self.retries = max(0, retries)
        self.base = max(0.0, base)
        self.failures = 0
        self._on_retry = on_retry

    def progressed(self) -> None:
        self.failures = 0

    def failed(self, what: str, exc: BaseException) -> None:
        """Sleep before the next attempt, or raise TransportError when attempts are used up."""
        self.failures += 1
        if self.failures > self.retries:
            raise errors.TransportError(
                f"{what}: giving up after {self.retries} retries: {describe(exc)}"
            ) from exc
        delay = min(MAX_DELAY, self.base * (2 ** (self.failures - 1)))
        log.warning(
            "%s: %s; retry %d/%d in %.1f s", what, describe(exc), self.failures, self.retries, delay
        )
        self._on_retry()
        if delay:
            time.sleep(delay)


def describe(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
