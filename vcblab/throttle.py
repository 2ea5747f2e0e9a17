"""Pacing of one lab transfer: the fault switches that act on bytes in flight.

Every body the lab's data plane sends (file service, NFC) goes through a ``Pacer``, so the
two switches that break transfers in the field behave the same everywhere:

* ``throttle_bps`` - one token bucket shared by every transfer of a lab, as one management
  network link would be shared;
* ``host_throttle_bps`` - one token bucket per host, shared by the transfers that host serves
  (its own uplink): proxies reading through different hosts do not slow each other down;
* ``drop_after_bytes`` / ``drop_count`` - the connection is cut after N body bytes, having
  announced the full Content-Length, which is what a client sees when a host drops a stream.
"""

from __future__ import annotations

import socket

from vcblab.faults import Faults

# Largest piece sent between two looks at the bucket: small enough that a throttled
# transfer paces smoothly, large enough that an unthrottled one costs nothing.
UNTHROTTLED_CHUNK = 1 << 20
MIN_CHUNK = 16 << 10


class Dropped(Exception):
    """The drop fault fired: the caller must cut the connection, not answer."""


class Pacer:
    """Decides how many bytes may go next; raises ``Dropped`` when the drop fault fires."""

    def __init__(self, lab, host: str | None = None) -> None:
        self.faults: Faults = lab.faults
        self.bucket = lab.bucket
        # The host serving this transfer (None: not a host's, only the shared link applies).
        self.host_bucket = lab.host_bucket(host) if host else None
        # One drop budget per transfer, taken at its start (drop_count counts transfers).
        self.drop_at = self.faults.drop_limit()
        self.sent = 0

    def next_chunk(self, wanted: int) -> int:
        """How many of ``wanted`` bytes to send now (after waiting for tokens), > 0."""
        rates = [self.faults.get("throttle_bps")]
        if self.host_bucket is not None:
            rates.append(self.faults.get("host_throttle_bps"))
        rate = min((r for r in rates if r), default=None)
        size = min(wanted, UNTHROTTLED_CHUNK)
        if rate:
            # About 20 pieces per second at the cap, so the bucket is consulted often.
            size = min(size, max(MIN_CHUNK, rate // 20))
        if self.drop_at is not None:
            left = self.drop_at - self.sent
            if left <= 0:
                if self.faults.take_drop():
                    raise Dropped(f"drop fault after {self.sent} bytes")
                self.drop_at = None
            else:
                size = min(size, left)
        self.bucket.consume(size)
        if self.host_bucket is not None:
            self.host_bucket.consume(size)
        return size

    def done(self, n: int) -> None:
        self.sent += n

    @property
    def unpaced(self) -> bool:
        """True when neither throttle nor drop applies (the sender may use one big sendfile)."""
        return (
            self.drop_at is None
            and not self.faults.get("throttle_bps")
            and (self.host_bucket is None or not self.faults.get("host_throttle_bps"))
        )


def cut(req) -> None:
    """Break the client's connection abruptly (after a drop fault)."""
    req.close_connection = True
    try:
        req.wfile.flush()
    except OSError:
        pass
    try:
        req.connection.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
