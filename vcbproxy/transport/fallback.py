"""Fallback chains (``-m san:nbdssl``): per file, the first mode that can serve it.

A mode that cannot serve a datastore (SAN without a mapping) or fails to open a file
falls through to the next with a logged reason; which mode served each file is kept in
``served_by`` for vcbproxy.json. Failures after a file is open are not retried in
another mode: each mode already resumes and retries within itself.
"""

from __future__ import annotations

import logging

from vcbproxy import errors
from vcbproxy.models import DatastorePath
from vcbproxy.transport.base import RandomAccess, TransferStats, Transport

log = logging.getLogger(__name__)


class FallbackTransport(Transport):
    name = "fallback"

    def __init__(self, modes: list[Transport]):
        if not modes:
            raise errors.UsageError("a fallback chain needs at least one transport mode")
        self.modes = list(modes)
        self._served_by: dict[str, str] = {}
        self.reasons: dict[str, list[str]] = {}  # file → why earlier modes passed

    @property
    def request_cost(self) -> int:  # type: ignore[override]
        return max(m.request_cost for m in self.modes)

    @property
    def served_by(self) -> dict[str, str]:
        return self._served_by

    @property
    def chain(self) -> str:
        return ":".join(m.name for m in self.modes)

    @property
    def stats(self) -> TransferStats:  # type: ignore[override]
        total = TransferStats()
        for mode in self.modes:
            s = mode.stats
            total.add(
                bytes_read=s.bytes_read,
                requests=s.requests,
                retries=s.retries,
                seconds=s.seconds,
                bytes_on_wire=s.bytes_on_wire,
            )
        return total

    def open(self, *, file: DatastorePath) -> RandomAccess:
        reasons: list[str] = []
        failures: list[errors.VcbProxyError] = []
        for mode in self.modes:
            if not mode.can_serve(file):
                reasons.append(f"{mode.name}: cannot serve datastore '{file.datastore}'")
                log.info(
                    "%s: %s cannot serve datastore '%s'; trying the next mode",
                    file,
                    mode.name,
                    file.datastore,
                )
                continue
            try:
                handle = mode.open(file=file)
            except errors.VcbProxyError as exc:
                reasons.append(f"{mode.name}: {exc}")
                failures.append(exc)
                log.warning("%s: %s failed (%s); trying the next mode", file, mode.name, exc)
                continue
            self._served_by[str(file)] = mode.name
            if reasons:
                self.reasons[str(file)] = reasons
            return handle
        summary = "; ".join(reasons)
        if failures and all(isinstance(f, errors.NotFoundError) for f in failures):
            raise errors.NotFoundError(f"{file}: not found by any mode of {self.chain} ({summary})")
        raise errors.TransportError(f"{file}: no mode of {self.chain} could read it ({summary})")

    def close(self) -> None:
        for mode in self.modes:
            mode.close()
