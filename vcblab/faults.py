"""Fault switches: what breaks in the field, settable at start (--fault) and while running."""

from __future__ import annotations

import threading
import time
from typing import Any

# name -> (type, default); None means "off".
SWITCHES: dict[str, tuple[type, Any]] = {
    "drop_after_bytes": (int, None),  # a file-service/NFC transfer breaks after N bytes ...
    "drop_count": (int, 1),  # ... this many times (0 = every time)
    "throttle_bps": (int, None),  # bandwidth cap of the file service and NFC, bytes/s
    "host_throttle_bps": (int, None),  # ... and of each host on its own (its uplink), bytes/s
    "fail_next_snapshot_create": (bool, False),
    "fail_next_snapshot_remove": (bool, False),
    "fail_quiesce": (bool, False),
    "task_delay": (float, 0.0),  # seconds every task spends "running"
    "snapshot_remove_delay": (float, 0.0),  # extra seconds a RemoveSnapshot_Task runs
    "expire_sessions": (bool, False),  # one-shot: every session is expired now
    "session_timeout": (float, 1800.0),  # idle seconds before a session expires
    "folder_unauthorized": (int, 0),  # the next N /folder requests get 401 whatever the cookie
    "reject_logins": (bool, False),  # Login fails with InvalidLogin (a changed password)
    "lease_timeout": (float, 300.0),  # seconds an NFC lease lives without a progress call
    "reset_cbt": (str, None),  # one-shot: VM moref or name whose tracking is reset
    "cbt_page_bytes": (int, None),  # cap on how much of a disk one QueryChangedDiskAreas covers
    "cbt_max_areas": (int, 2048),  # ... and on how many areas one answer holds (as ESXi)
}


class FaultError(ValueError):
    pass


def parse_value(name: str, value: Any) -> Any:
    if name not in SWITCHES:
        raise FaultError(f"unknown fault switch {name!r}; known: {', '.join(sorted(SWITCHES))}")
    kind, _ = SWITCHES[name]
    if (
        value is None
        or value == ""
        or (isinstance(value, str) and value.lower() in ("none", "off"))
    ):
        return SWITCHES[name][1] if kind is not bool else False
    try:
        if kind is bool:
            return (
                value
                if isinstance(value, bool)
                else str(value).lower() in ("1", "true", "yes", "on")
            )
        if kind is int:
            return int(float(value)) if isinstance(value, str) and "." in value else int(value)
        return kind(value)
    except (TypeError, ValueError) as exc:
        raise FaultError(f"fault switch {name}: {value!r} is not a {kind.__name__}") from exc


class Faults:
    """Thread-safe switch board; one-shot switches are consumed by whoever acts on them."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._values = {name: default for name, (_, default) in SWITCHES.items()}
        self._drops_done = 0
        self.listeners: list = []  # called with the changed names (sessions, CBT reset)

    def set(self, updates: dict[str, Any]) -> dict[str, Any]:
        parsed = {name: parse_value(name, value) for name, value in updates.items()}
        with self._lock:
            self._values.update(parsed)
            if "drop_after_bytes" in parsed or "drop_count" in parsed:
                self._drops_done = 0
        for listener in self.listeners:
            listener(self, set(parsed))
        return self.snapshot()

    def get(self, name: str) -> Any:
        with self._lock:
            return self._values[name]

    def take(self, name: str) -> Any:
        """Read a one-shot switch and turn it off."""
        with self._lock:
            value = self._values[name]
            self._values[name] = SWITCHES[name][1] if SWITCHES[name][0] is not bool else False
            return value

    def take_one(self, name: str) -> bool:
        """Spend one of a counting switch (``folder_unauthorized``); False when none is left."""
        with self._lock:
            if not self._values[name]:
                return False
            self._values[name] -= 1
            return True

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return dict(self._values)

    def drop_limit(self) -> int | None:
        """Bytes after which a transfer starting now must break, or None when no drop is due.

        Only a transfer that really reaches the limit spends a drop (``take_drop``), so small
        files (a .vmx, an .nvram) read before a disk do not use up the budget.
        """
        with self._lock:
            limit = self._values["drop_after_bytes"]
            count = self._values["drop_count"]
            if limit is None or (count and self._drops_done >= count):
                return None
            return limit

    def take_drop(self) -> bool:
        """Spend one drop; False when the budget ran out meanwhile (the transfer goes on)."""
        with self._lock:
            count = self._values["drop_count"]
            if self._values["drop_after_bytes"] is None or (count and self._drops_done >= count):
                return False
            self._drops_done += 1
            return True


class TokenBucket:
    """Bandwidth cap shared by all transfers, as one management network link would be; with
    ``switch="host_throttle_bps"``, one host's own link (one bucket per host)."""

    def __init__(self, faults: Faults, switch: str = "throttle_bps"):
        self.faults = faults
        self.switch = switch
        self._lock = threading.Lock()
        self._tokens = 0.0
        self._stamp = time.monotonic()

    def consume(self, n: int) -> None:
        rate = self.faults.get(self.switch)
        if not rate:
            return
        with self._lock:
            now = time.monotonic()
            # Burst of at most 50 ms worth, so the cap holds at short time scales.
            self._tokens = min(rate * 0.05, self._tokens + (now - self._stamp) * rate)
            self._stamp = now
            self._tokens -= n
            wait = -self._tokens / rate if self._tokens < 0 else 0.0
        if wait > 0:
            time.sleep(wait)
