"""NFC export lease URLs: ``GET /nfc/<lease id>/<device key>.vmdk``.

An ESXi host answers an ExportVm/ExportSnapshot lease's device URL with the disk as one
streamOptimized VMDK (deflated grains, markers, footer) produced on the fly; the size is not
known in advance, so the body is sent with chunked transfer coding (a cut connection is then
visible to the client as an incomplete body, not as a short but "complete" one). The content
is the disk as of the lease's snapshot mark, so later guest writes do not leak into it.

404 for an unknown lease or disk, 410 once the lease is complete, aborted or timed out
(also mid-stream: the transfer is cut). The drop and throttle fault switches apply.
"""

from __future__ import annotations

import logging
import re

from vcblab.fileservice import HttpError, query_of, reply_error, session_of
from vcblab.readers import places_of, reader_of
from vcblab.throttle import Dropped, Pacer, cut

log = logging.getLogger(__name__)

CONTENT_TYPE = "application/x-vnd.vmware-streamVmdk"
_URL = re.compile(r"^/nfc/([^/]+)/(\d+)\.vmdk$")


def handle(req, lab) -> None:
    """Answer one ``/nfc/...`` request on either port."""
    try:
        session = session_of(req, lab)
        path, _ = query_of(req)
        m = _URL.match(path)
        if not m:
            raise HttpError(404, f"no NFC device at {path}")
        if req.command not in ("GET", "HEAD"):
            raise HttpError(
                405, f"{req.command} not supported on NFC device URLs", {"Allow": "GET, HEAD"}
            )
        lease_id, key = m.group(1), int(m.group(2))
        with lab.lock:
            lease = lab.leases.get(lease_id)
            if lease is None:
                raise HttpError(404, f"no lease {lease_id}")
            _check_live(lease, lease_id)
            entry = lease.disks.get(key)
            if entry is None:
                raise HttpError(404, f"lease {lease_id} has no disk with device key {key}")
            lease.touch()
        disk, mark = entry
        vm = lab.obj(lease.vm_moref)
        slot = getattr(vm, "slots", {}).get(key)
        host = vm.host.name if vm is not None and vm.host is not None else None
        if slot is None:
            _stream(req, lab, lease, lease_id, disk, mark, host)
            return
        datastore = f"{vm.datacenter().path}/{slot.datastore}"
        with lab.readers.reading(reader_of(req, session), places_of(datastore, vm)):
            _stream(req, lab, lease, lease_id, disk, mark, host)
    except HttpError as err:
        reply_error(req, err)
    except Dropped as why:
        log.info("NFC transfer %s cut: %s", req.path, why)
        cut(req)
    except (BrokenPipeError, ConnectionResetError) as exc:
        log.debug("client went away during %s: %s", req.path, exc)
        req.close_connection = True


def _check_live(lease, lease_id: str) -> None:
    if lease.state in ("done", "error") or lease.expired():
        state = "expired" if lease.state == "ready" else lease.state
        raise HttpError(410, f"lease {lease_id} is {state}")


def _stream(req, lab, lease, lease_id: str, disk, mark, host: str | None = None) -> None:
    from vcbproxy.vmdk.stream import StreamOptimizedWriter

    chunked = req.request_version >= "HTTP/1.1"
    req.send_response(200)
    req.send_header("Content-Type", CONTENT_TYPE)
    if chunked:
        req.send_header("Transfer-Encoding", "chunked")
    else:
        req.send_header("Connection", "close")
        req.close_connection = True
    req.end_headers()
    if req.command == "HEAD":
        return
    sink = _Sink(req, Pacer(lab, host), lease, lease_id, chunked)
    writer = StreamOptimizedWriter(sink, disk.capacity)
    for offset, data in disk.pieces(mark):
        writer.write(offset, data)
    writer.close()
    sink.finish()


class _Sink:
    """File-like ``write`` target of the VMDK writer: collects its many small writes
    (markers, sector padding) into pieces of SEND_PIECE bytes, then frames, paces and
    sends them."""

    SEND_PIECE = 256 << 10

    def __init__(self, req, pacer: Pacer, lease, lease_id: str, chunked: bool):
        self.req, self.pacer, self.lease, self.lease_id = req, pacer, lease, lease_id
        self.chunked = chunked
        self.position = 0
        self._buf = bytearray()

    def write(self, data) -> int:
        self._buf += data
        if len(self._buf) >= self.SEND_PIECE:
            self._send(self._buf)
            self._buf = bytearray()
        return len(data)

    def _send(self, data) -> None:
        view = memoryview(data).cast("B")
        if self.lease.state != "ready" or self.lease.expired():
            # Complete/abort/timeout while streaming: ESXi tears the transfer down.
            raise Dropped(f"lease {self.lease_id} ended during the transfer")
        sent = 0
        while sent < len(view):
            n = self.pacer.next_chunk(len(view) - sent)
            piece = view[sent : sent + n]
            if self.chunked:
                self.req.wfile.write(b"%x\r\n" % n)
                self.req.wfile.write(piece)
                self.req.wfile.write(b"\r\n")
            else:
                self.req.wfile.write(piece)
            self.pacer.done(n)
            sent += n
        self.position += sent

    def finish(self) -> None:
        if self._buf:
            self._send(self._buf)
            self._buf = bytearray()
        if self.chunked:
            self.req.wfile.write(b"0\r\n\r\n")
