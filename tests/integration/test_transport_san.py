"""SAN mode against real files: holes, kernel copies, mappings, escapes."""

from __future__ import annotations

import hashlib
import os

import pytest

from vcbproxy import errors
from vcbproxy.models import DatastorePath
from vcbproxy.transport import ModeOptions, SanOptions, create
from vcbproxy.transport.san import SanTransport

MiB = 1 << 20
# 64 KiB-aligned data regions so every filesystem reports the same extents.
REGIONS = [(0, 64 << 10), (3 * MiB, MiB + (128 << 10)), (9 * MiB - (64 << 10), 64 << 10)]
SIZE = 12 * MiB


@pytest.fixture
def volume(tmp_path):
    root = tmp_path / "vol-uuid-1"
    (root / "vm").mkdir(parents=True)
    disk = root / "vm" / "disk-flat.vmdk"
    expected = bytearray(SIZE)
    with disk.open("wb") as f:
        for offset, length in REGIONS:
            data = os.urandom(length)
            f.seek(offset)
            f.write(data)
            expected[offset : offset + length] = data
        f.truncate(SIZE)
    (root / "vm" / "vm.vmx").write_text('displayName = "vm"\n')
    (tmp_path / "secret").write_text("outside")
    os.symlink(tmp_path / "secret", root / "vm" / "link")
    return root, bytes(expected)


def san(root):
    return create(
        "san", session=None, options=ModeOptions(san=SanOptions(san_map={"datastore1": str(root)}))
    )


DISK = DatastorePath("datastore1", "vm/disk-flat.vmdk")


def test_reads_are_exact(volume):
    root, expected = volume
    with san(root) as t:
        f = t.open(file=DISK)
        assert f.size == SIZE
        assert b"".join(f.stream(0, f.size)) == expected
        assert f.pread(3 * MiB - 5, 100) == expected[3 * MiB - 5 : 3 * MiB + 95]
        assert f.pread(SIZE - 3, 10) == expected[-3:]
        assert b"".join(f.stream(100, 5 * MiB, chunk=333_333)) == expected[100 : 100 + 5 * MiB]
        f.close()
    assert t.stats.bytes_read >= SIZE


def test_data_ranges_match_what_was_written(volume):
    root, _ = volume
    with san(root) as t, t.open(file=DISK) as f:
        assert f.holes_known
        assert list(f.data_ranges(0, SIZE)) == REGIONS
        # a window clips the extents
        assert list(f.data_ranges(32 << 10, 3 * MiB)) == [(32 << 10, 32 << 10), (3 * MiB, 32 << 10)]
        assert list(f.data_ranges(10 * MiB, 2 * MiB)) == []


def test_copy_to_fd_is_byte_exact_and_keeps_holes(volume, tmp_path):
    root, expected = volume
    out = tmp_path / "copy.raw"
    with san(root) as t, t.open(file=DISK) as f:
        fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            for offset, length in f.data_ranges():
                assert f.copy_to_fd(fd, offset, length, offset) == length
            os.ftruncate(fd, f.size)
        finally:
            os.close(fd)
        # copying into another offset of the target works too
        shifted = tmp_path / "shifted.raw"
        fd = os.open(shifted, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            assert f.copy_to_fd(fd, 3 * MiB, MiB, 4096) == MiB
        finally:
            os.close(fd)
    assert hashlib.sha256(out.read_bytes()).digest() == hashlib.sha256(expected).digest()
    assert out.stat().st_blocks * 512 < SIZE // 2  # the holes stayed holes
    assert shifted.read_bytes()[4096:] == expected[3 * MiB : 4 * MiB]


def test_copy_to_fd_across_filesystems(volume):
    # /dev/shm is tmpfs: copy_file_range refuses (EXDEV) and the pread/pwrite path takes over.
    root, expected = volume
    fd = os.open("/dev/shm", os.O_TMPFILE | os.O_RDWR, 0o600)
    try:
        with san(root) as t, t.open(file=DISK) as f:
            assert f.copy_to_fd(fd, 2 * MiB, 3 * MiB, 0) == 3 * MiB
            assert f.copy_to_fd(fd, SIZE - 10, 100, 3 * MiB) == 10  # short only at EOF
        assert os.pread(fd, 4 * MiB, 0) == expected[2 * MiB : 5 * MiB] + expected[-10:]
    finally:
        os.close(fd)


def test_copy_to_fd_error_is_clear(volume):
    root, _ = volume
    r, w = os.pipe()
    try:
        with (
            san(root) as t,
            t.open(file=DISK) as f,
            pytest.raises(errors.TransportError, match=r"disk-flat.vmdk .* at offset 0"),
        ):
            f.copy_to_fd(w, 0, 100, 0)
    finally:
        os.close(r)
        os.close(w)


def test_files_open_read_only(volume):
    root, _ = volume
    with san(root) as t, t.open(file=DISK) as f, pytest.raises(OSError):
        os.write(f.fd, b"x")


def test_unmapped_datastore_is_refused_with_the_fix(volume):
    root, _ = volume
    with (
        san(root) as t,
        pytest.raises(
            errors.TransportError,
            match=r"datastore 'datastore2' is not mapped for SAN mode; give --san-map datastore2=/path",
        ),
    ):
        t.open(file=DatastorePath("datastore2", "vm/disk.vmdk"))


def test_mapping_by_datastore_url(volume):
    root, expected = volume
    url = "ds:///vmfs/volumes/5f1a2b3c-aaaa/"
    # The session says which datastore has which URL (Session.datastore_urls); here, by hand.
    options = SanOptions(san_map={url.rstrip("/"): str(root)})
    with SanTransport(options=options, datastore_urls={"datastore1": url}) as t:
        assert t.open(file=DISK).pread(0, 100) == expected[:100]
        assert t.can_serve(DISK)
        assert not t.can_serve(DatastorePath("other", "x"))


def test_escapes_are_refused(volume):
    root, _ = volume
    with san(root) as t:
        with pytest.raises(errors.TransportError, match="outside the SAN mapping"):
            t.open(file=DatastorePath("datastore1", "vm/../../secret"))
        with pytest.raises(errors.TransportError, match="outside the SAN mapping"):
            t.open(file=DatastorePath("datastore1", "vm/link"))
        with pytest.raises(errors.TransportError, match="leaves datastore"):
            t.opener(directory=DatastorePath("datastore1", "vm"))("../../secret")


def test_missing_file_is_not_found(volume):
    root, _ = volume
    with san(root) as t, pytest.raises(errors.NotFoundError, match=r"\[datastore1\] vm/nope"):
        t.open(file=DatastorePath("datastore1", "vm/nope"))


def test_opener_reads_descriptor_neighbours(volume):
    root, _ = volume
    with san(root) as t:
        opener = t.opener(directory=DatastorePath("datastore1", "vm"))
        assert opener("vm.vmx").pread(0, 100) == b'displayName = "vm"\n'


def _flat_disk_copy(root, tmp_path, fmt, checksum=True):
    """Copy the volume's flat file as a one-run disk, the way the export does."""
    from vcbproxy.transport.chain import LayerFiles
    from vcbproxy.vmdk.chain import Run
    from vcbproxy.vmdk.copy import copy_runs
    from vcbproxy.vmdk.writers import open_writer

    out = tmp_path / f"out-{fmt}-{checksum}"
    out.mkdir()
    with san(root) as t:
        files = LayerFiles(t.opener(directory=DatastorePath("datastore1", "vm")))
        writer = open_writer(fmt, out, "disk", SIZE, uuid=None)
        try:
            result = copy_runs(
                [Run(0, SIZE, "disk-flat.vmdk", 0)], files, writer, capacity=SIZE, checksum=checksum
            )
        finally:
            files.close()
        result.files = writer.close()
        return t.stats, result, out


def test_export_copy_reads_only_data_and_copies_in_the_kernel(volume, tmp_path, monkeypatch):
    """Holes are never read, whatever the output format; into a flat extent the data moves
    with copy_file_range, and the hash, read back in the worker, is still the whole disk's."""
    root, expected = volume
    data_bytes = sum(length for _, length in REGIONS)
    kernel_copied = []
    real_copy = os.copy_file_range

    def counting_copy(src, dst, count, offset_src=None, offset_dst=None):  # the real call, counted
        done = real_copy(src, dst, count, offset_src, offset_dst)
        kernel_copied.append(done)
        return done

    monkeypatch.setattr(os, "copy_file_range", counting_copy)
    stats, result, out = _flat_disk_copy(root, tmp_path, "flat")
    assert result.content_sha256 == hashlib.sha256(expected).hexdigest()
    assert (result.bytes_read, result.bytes_zero) == (data_bytes, SIZE - data_bytes)
    assert stats.bytes_read == data_bytes
    assert sum(kernel_copied) == data_bytes
    assert (out / "disk-flat.vmdk").read_bytes() == expected
    assert result.file_sha256 == {"disk-flat.vmdk": result.content_sha256}

    kernel_copied.clear()
    stats, result, out = _flat_disk_copy(root, tmp_path, "2gbsparse")
    assert result.content_sha256 == hashlib.sha256(expected).hexdigest()
    assert stats.bytes_read == data_bytes
    assert kernel_copied == []  # grains must pass through the writer


def test_without_checksum_the_copy_is_exact_and_nothing_claims_a_hash(volume, tmp_path):
    root, expected = volume
    stats, result, out = _flat_disk_copy(root, tmp_path, "flat", checksum=False)
    assert (out / "disk-flat.vmdk").read_bytes() == expected
    assert result.content_sha256 == "" and result.file_sha256 == {}
    assert stats.bytes_read == sum(length for _, length in REGIONS)


def test_a_full_staging_disk_met_by_the_kernel_copy_is_a_staging_error(volume, tmp_path):
    """ENOSPC while SAN mode copies into a flat disk's raw extent (issue 14, item 6) is the
    staging side's failure, exit 14 naming the directory, not a read error of the datastore.
    The extent's partial file is a link to /dev/full, where every write fails with ENOSPC as
    on a full file system (copy_file_range refuses a device: the pread/pwrite path meets it)."""
    from collections import namedtuple

    from vcbproxy.vmdk.copy import _kernel_copy, _NoHasher
    from vcbproxy.vmdk.writers import open_writer

    root, _ = volume
    out = tmp_path / "out"
    out.mkdir()
    os.symlink("/dev/full", out / "d-flat.vmdk.partial")
    run = namedtuple("Run", "offset length source source_offset")(0, SIZE, "disk", 0)
    writer = open_writer("flat", out, "d", SIZE)
    try:
        with (
            san(root) as t,
            t.open(file=DISK) as f,
            pytest.raises(errors.StagingError, match=rf"staging {out} is full .*d-flat\.vmdk"),
        ):
            _kernel_copy(f, writer, run, _NoHasher(), lambda n: None)
    finally:
        writer.abort()
    assert not list(out.iterdir())
