"""What SSH mode runs on the host, and how the bytes it prints come back in.

Three remote readers print ranges of a datastore file, tried in this order until one works
(``SshTransport`` remembers the first that did):

* ``python``: a short script for the host's own Python (current ESXi releases ship one),
  run with ``python3 -c`` or ``python -c``. It reads the file on the host and prints
  records instead of raw bytes: a 64 KiB block of zeros is sent as a 5-byte record, so the
  unallocated part of a thin or sparse disk never crosses the network or gets decrypted
  by paramiko (on the lab's disks, 60 % of the bytes).
* ``dd``: GNU ``dd`` with ``iflag=skip_bytes,count_bytes``: every byte, as is.
* ``tail``: ``tail -c +N | head -c N`` for busybox hosts whose ``dd`` lacks those flags.

Every reader takes the same plan: ranges of ``size`` bytes starting at ``first`` and every
``stride`` bytes after it, up to ``end`` (one range, or a stripe of parallel segments).

:class:`FastPipe` replaces paramiko's channel buffer: that one copies each packet into an
``array`` and out again, and moves the rest of the buffer down on every partial read
(a fifth of a one-channel transfer's CPU time in a profile); this one hands the packets on.
"""

from __future__ import annotations

import shlex
import struct
import threading
import time
from collections import deque
from collections.abc import Iterator

# Blocks the python reader checks for zeros; records hold at most READ_SIZE bytes.
BLOCK = 64 << 10
READ_SIZE = 1 << 20
ZEROS = bytes(READ_SIZE)
_HEADER = struct.Struct(">BI")  # kind (0 zeros, 1 data), length
KIND_ZEROS, KIND_DATA = 0, 1

READER_SHORT_FILE = 3  # the python reader's exit status when the file ends too early
READER_FILE_ERROR = 4  # ... when the file cannot be opened or read (stderr says why)
# Kept to what Python 2.7 also runs (no f-strings, no os.pread), as older ESXi builds ship
# 2.7 only; the tests run it with the Python 3 of the test host. argv: path first end size stride.
READER_SCRIPT = (
    """\
import errno, os, struct, sys
try:
    fd = os.open(sys.argv[1], os.O_RDONLY)
except (IOError, OSError) as e:
    sys.stderr.write("%s: %s\\n" % (sys.argv[1], e.strerror))
    sys.exit(@FILE_ERROR@)
first, end, size, stride = [int(a) for a in sys.argv[2:6]]
out = getattr(sys.stdout, "buffer", sys.stdout)
B = @BLOCK@
Z = b"\\0" * B
# Holes are skipped without reading them where the file system tells (SEEK_DATA). Not on
# ESXi (VMkernel): SEEK_DATA on VMFS is untested here, and its thin disks' unallocated
# blocks read as zeros, which the block check turns into records all the same.
seek = getattr(os, "SEEK_DATA", None) is not None and os.uname()[0] != "VMkernel"
eof = os.fstat(fd).st_size


def zeros(n):
    while n:
        k = min(n, 1 << 30)
        out.write(struct.pack(">BI", 0, k))
        n -= k


def data(q, t):
    while q < t:
        try:
            os.lseek(fd, q, 0)
            d = os.read(fd, min(@READ@, t - q))
        except (IOError, OSError) as e:
            sys.stderr.write("%s: %s\\n" % (sys.argv[1], e.strerror))
            sys.exit(@FILE_ERROR@)
        if not d:
            sys.exit(@SHORT@)
        i, n = 0, len(d)
        while i < n:
            z = d[i:i + B] == Z[:n - i]
            j = i + B
            while j < n and (d[j:j + B] == Z[:n - j]) == z:
                j += B
            j = min(j, n)
            if z:
                zeros(j - i)
            else:
                out.write(struct.pack(">BI", 1, j - i))
                out.write(d[i:j])
            i = j
        q += n


o = first
while o < end:
    q, t = o, min(o + size, end, eof)
    while q < t and seek:
        try:
            at = min(os.lseek(fd, q, os.SEEK_DATA), t)
        except OSError as e:
            if e.errno != errno.ENXIO:
                seek = False
                break
            at = t
        zeros(at - q)
        if at == t:
            q = t
            break
        try:
            stop = min(os.lseek(fd, at, os.SEEK_HOLE), t)
        except OSError:
            stop = t
        if stop <= at:
            stop = t
        data(at, stop)
        q = stop
    data(q, t)
    if t < min(o + size, end):
        out.flush()
        sys.exit(@SHORT@)
    o += stride
out.flush()
""".replace("@BLOCK@", str(BLOCK))
    .replace("@READ@", str(READ_SIZE))
    .replace("@SHORT@", str(READER_SHORT_FILE))
    .replace("@FILE_ERROR@", str(READER_FILE_ERROR))
)

# A VM directory in one command: every regular file's size, and the content of the small
# ones (.vmx, .nvram, descriptors, short logs), each a command of its own otherwise (~140 ms
# each on the test sshd). argv: directory, largest file sent, most bytes sent in all.
# A file whose size changed while it was read is listed without content (read normally).
LISTING_MAGIC = b"vcbproxy-listing 1\n"
LISTING_END = b"vcbproxy-listing end\n"
LISTING_SCRIPT = """\
import os, stat, sys
d = sys.argv[1]
d = os.fsencode(d) if hasattr(os, "fsencode") else d
small, budget = int(sys.argv[2]), int(sys.argv[3])
out = getattr(sys.stdout, "buffer", sys.stdout)
out.write(b"@MAGIC@")
for name in sorted(os.listdir(d)):
    p = os.path.join(d, name)
    try:
        st = os.stat(p)
    except OSError:
        continue
    if not stat.S_ISREG(st.st_mode):
        continue
    data = b""
    if st.st_size <= min(small, budget):
        try:
            f = open(p, "rb")
            data = f.read(small + 1)
            if len(data) != st.st_size or os.fstat(f.fileno()).st_size != st.st_size:
                data = b""
            f.close()
        except (IOError, OSError):
            data = b""
    if not data and st.st_size:
        sent = -1
    else:
        sent = len(data)
        budget -= sent
    out.write(("%d %d %d\\n" % (len(name), st.st_size, sent)).encode("ascii"))
    out.write(name)
    out.write(data)
out.write(b"@END@")
out.flush()
""".replace("@MAGIC@", LISTING_MAGIC.decode("ascii").replace("\n", "\\n")).replace(
    "@END@", LISTING_END.decode("ascii").replace("\n", "\\n")
)


def listing_command(directory: str, small: int, budget: int, *, python: bool) -> str:
    """List ``directory``: with the host's Python, sizes and small files' contents
    (:func:`parse_listing`); else, or without Python, ``stat`` lines ``type|size|name``."""
    quoted = shlex.quote(directory)
    plain = f"cd {quoted} && stat -L -c '%F|%s|%n' -- *"
    if not python:
        return plain
    args = f"{shlex.quote(LISTING_SCRIPT)} {quoted} {small} {budget}"
    # A Python that fails (it may print part of a listing first: parse_listing then refuses
    # the whole answer) still leaves stat's listing to the parser.
    return (
        f"for p in {' '.join(PYTHONS)}; do command -v $p >/dev/null 2>&1 && "
        f"{{ $p -E -S -c {args} && exit 0; break; }}; done; {plain}"
    )


def parse_listing(out: bytes, directory: str) -> tuple[dict[str, int], dict[str, bytes]]:
    """``({path: size}, {path: content})`` from a listing command's output, either form."""
    sizes: dict[str, int] = {}
    contents: dict[str, bytes] = {}
    if not out.startswith(LISTING_MAGIC):
        previous = None
        text = out.decode("utf-8", "surrogateescape")
        for line in (text[:-1] if text.endswith("\n") else text).split("\n"):
            kind, _, rest = line.partition("|")
            digits, _, name = rest.partition("|")
            if not (digits.isdigit() and name):
                # A name with a newline in it went on here: that entry is not to be trusted
                # (its file is asked for on its own when opened).
                if previous is not None:
                    sizes.pop(previous, None)
                continue
            previous = f"{directory}/{name}"
            if kind.startswith("regular") and "/" not in name:
                sizes[previous] = int(digits)
        return sizes, contents
    if not out.endswith(LISTING_END):
        raise ValueError(f"listing of {directory} is incomplete")
    at, stop = len(LISTING_MAGIC), len(out) - len(LISTING_END)
    while at < stop:
        newline = out.index(b"\n", at, stop)
        name_len, size, sent = (int(x) for x in out[at:newline].split())
        if newline + 1 + name_len > stop:
            raise ValueError(f"listing of {directory}: a name runs past the end")
        name = out[newline + 1 : newline + 1 + name_len].decode("utf-8", "surrogateescape")
        at = newline + 1 + name_len
        path = f"{directory}/{name}"
        sizes[path] = size
        if sent >= 0:
            if sent != size or at + sent > stop:
                raise ValueError(f"listing of {directory}: {name!r} sent {sent} of {size} bytes")
            contents[path] = out[at : at + sent]
            at += sent
    return sizes, contents


READERS = ("python", "dd", "tail")
# Scripts run with -E -S: the host's PYTHON* variables and site-packages cannot change what
# they import (they need the standard library only), in Python 2 and 3 alike.
# Interpreters the python reader looks for, the system's own first: a name looked up in
# PATH may be a user's shim (pyenv's costs ~0.1 s per start) or not the system's at all.
# ESXi has /bin/python.
PYTHONS = (
    "/bin/python3",
    "/usr/bin/python3",
    "/bin/python",
    "/usr/bin/python",
    "python3",
    "python",
)
DD_FLAGS = "skip_bytes,count_bytes"  # GNU dd; busybox's lacks them


def reader_command(reader: str, remote: str, first: int, end: int, size: int, stride: int) -> str:
    """The shell command printing the planned ranges of ``remote`` with ``reader``."""
    quoted = shlex.quote(remote)
    if reader == "python":
        # exit 127 when the host has no Python: the caller then falls back to dd.
        args = f"{shlex.quote(READER_SCRIPT)} {quoted} {first} {end} {size} {stride}"
        return (
            f"for p in {' '.join(PYTHONS)}; do command -v $p >/dev/null 2>&1 && "
            f"exec $p -E -S -c {args}; done; exit 127"
        )
    if reader not in ("dd", "tail"):
        raise ValueError(f"unknown remote reader {reader!r}")

    def read(offset: str, count: str) -> str:
        if reader == "dd":
            return f"dd if={quoted} bs=1M iflag={DD_FLAGS} skip={offset} count={count} status=none"
        return f"tail -c +$(({offset} + 1)) -- {quoted} | head -c {count}"  # tail counts from 1

    if size >= end - first:
        return read(str(first), str(end - first))
    # A file's size was taken at open and a snapshot's disk does not change, so every range
    # is exactly its length; a short one shows as a short stream (a retry).
    return (
        f"o={first}; while [ $o -lt {end} ]; do n=$(({end} - o)); "
        f"if [ $n -gt {size} ]; then n={size}; fi; {read('$o', '$n')} || exit 1; "
        f"o=$((o + {stride})); done"
    )


class StreamEnded(Exception):
    """The channel closed before the bytes the plan promised."""


class Incoming:
    """Exact reads over a channel whose buffer is a :class:`FastPipe`: whole packets are
    passed on without copies, only the pieces cut at a boundary are sliced."""

    def __init__(self, chan):
        self._recv = chan.recv
        self._buf = b""
        self._at = 0
        self.received = 0  # bytes that came over the channel

    def _fill(self) -> None:
        data = self._recv(1 << 30)
        if not data:
            raise StreamEnded("stream ended early")
        self._buf, self._at = data, 0
        self.received += len(data)

    def take(self, most: int) -> bytes:
        """Up to ``most`` (> 0) bytes: the rest of the packet at hand, cut if longer."""
        if self._at == len(self._buf):
            self._fill()
        if self._at == 0 and len(self._buf) <= most:
            piece = self._buf
        else:
            piece = self._buf[self._at : self._at + most]
        self._at += len(piece)
        return piece

    def exact(self, length: int) -> bytes:
        parts = []
        while length:
            parts.append(self.take(length))
            length -= len(parts[-1])
        return parts[0] if len(parts) == 1 else b"".join(parts)


class _Chunks:
    """Regroups pieces into chunks of at most ``chunk`` bytes (fewer, larger chunks: less
    work per chunk for the hash worker and the writer)."""

    def __init__(self, incoming: Incoming, chunk: int):
        self._incoming = incoming
        self._chunk = chunk
        self._room = chunk
        self._parts: list[bytes] = []

    def take(self, length: int) -> Iterator[bytes]:
        """Read ``length`` bytes from the channel; yield each chunk that fills up."""
        while length:
            piece = self._incoming.take(min(length, self._room))
            length -= len(piece)
            self._parts.append(piece)
            self._room -= len(piece)
            if self._room <= 0:
                yield from self.flush()

    def flush(self) -> Iterator[bytes]:
        """Yield what is held, if anything, as one chunk."""
        parts, self._parts, self._room = self._parts, [], self._chunk
        if parts:
            yield parts[0] if len(parts) == 1 else b"".join(parts)


def raw_chunks(incoming: Incoming, length: int, chunk: int) -> Iterator[bytes]:
    """``length`` bytes printed as they are (dd, tail), in chunks of at most ``chunk``."""
    chunks = _Chunks(incoming, chunk)
    yield from chunks.take(length)
    yield from chunks.flush()


def record_chunks(incoming: Incoming, length: int, chunk: int) -> Iterator[bytes]:
    """``length`` bytes printed by the python reader, in chunks of at most ``chunk``: data
    records regrouped, zero records as slices of one shared zero buffer (no allocation)."""
    chunks = _Chunks(incoming, chunk)
    while length:
        kind, n = _HEADER.unpack(incoming.exact(_HEADER.size))
        if n == 0 or n > length or kind not in (KIND_ZEROS, KIND_DATA):
            raise StreamEnded(f"garbled record ({kind}, {n}) with {length} bytes to go")
        length -= n
        if kind == KIND_DATA:
            yield from chunks.take(n)
            continue
        yield from chunks.flush()
        while n:
            step = min(n, chunk, READ_SIZE)
            yield ZEROS if step == READ_SIZE else ZEROS[:step]
            n -= step
    yield from chunks.flush()


class FastPipe:
    """Drop-in for ``paramiko.buffered_pipe.BufferedPipe`` (``Channel.in_buffer``): a deque of
    the packets' bytes objects. ``read(n)`` returns the first packet itself when it fits."""

    def __init__(self):
        self._lock = threading.Lock()
        self._cv = threading.Condition(self._lock)
        self._event = None
        self._parts: deque[bytes] = deque()
        self._size = 0
        self._closed = False

    def set_event(self, event) -> None:
        with self._lock:
            self._event = event
            if self._closed or self._size:
                event.set()
            else:
                event.clear()

    def feed(self, data) -> None:
        with self._lock:
            if self._event is not None:
                self._event.set()
            data = bytes(data) if not isinstance(data, bytes) else data
            if data:
                self._parts.append(data)
                self._size += len(data)
            self._cv.notify_all()

    def read_ready(self) -> bool:
        with self._lock:
            return self._size > 0

    def read(self, nbytes: int, timeout: float | None = None) -> bytes:
        from paramiko.buffered_pipe import PipeTimeout

        with self._lock:
            deadline = None if timeout is None else time.monotonic() + timeout
            while not self._size and not self._closed:
                if deadline is not None:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        raise PipeTimeout()
                    self._cv.wait(left)
                else:
                    self._cv.wait()
            if not self._size:
                return b""
            first = self._parts[0]
            if len(first) <= nbytes:
                out = self._parts.popleft()
            else:
                out, self._parts[0] = first[:nbytes], first[nbytes:]
            self._size -= len(out)
            if not self._size and self._event is not None and not self._closed:
                self._event.clear()
            return out

    def empty(self) -> bytes:
        with self._lock:
            out = b"".join(self._parts)
            self._parts.clear()
            self._size = 0
            if self._event is not None and not self._closed:
                self._event.clear()
            return out

    def close(self) -> None:
        with self._lock:
            self._closed = True
            self._cv.notify_all()
            if self._event is not None:
                self._event.set()

    def __len__(self) -> int:
        with self._lock:
            return self._size
