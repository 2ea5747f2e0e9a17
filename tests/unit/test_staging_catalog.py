"""VCB catalog: key= value lines as VCB wrote them, round trip exact."""

from __future__ import annotations

import pytest

from vcbproxy import errors
from vcbproxy.staging.catalog import read_catalog, write_catalog

FIELDS = {
    "version": "esx-3.5.0",
    "state": "full",
    "display name": "web01 Süd",
    "uuid": "564d1234-5678-9abc-def0-123456789abc",
    "host": "esx01.lab",
    "resourcepool": "/ha-datacenter/host/esx01/Resources",
    "timestamp": "Mon Mar 03 12:00:01 2025",
    "config.vmx": '"[datastore1] web01/web01.vmx"',
    "disk.scsi0:0.filename": "scsi0-0-0-web01.vmdk",
    "disk.scsi0:0.diskname": '"[datastore1] web01/web01.vmdk"',
    "empty": "",
    "spaced": "  leading and trailing  ",
}


def test_round_trip_and_format(tmp_path):
    path = write_catalog(tmp_path, FIELDS)
    assert path == tmp_path / "catalog"
    text = path.read_text(encoding="utf-8")
    assert text.splitlines()[:3] == ["version= esx-3.5.0", "state= full", "display name= web01 Süd"]
    assert 'disk.scsi0:0.diskname= "[datastore1] web01/web01.vmdk"' in text.splitlines()
    assert read_catalog(path) == FIELDS
    assert read_catalog(tmp_path) == FIELDS  # the export directory works too
    assert list(read_catalog(path)) == list(FIELDS)  # order kept


def test_reads_vcb_style_files(tmp_path):
    (tmp_path / "catalog").write_bytes(
        b"# written by VCB\r\nversion= esx-3.5.0\r\n\r\nstate=full\r\n"
    )
    assert read_catalog(tmp_path) == {"version": "esx-3.5.0", "state": "full"}


def test_refuses_keys_that_cannot_be_one_line(tmp_path):
    for key, value in [("a\nb", "x"), ("a\tb", "x"), ("a=b", "x"), ("", "x")]:
        with pytest.raises(errors.StagingError):
            write_catalog(tmp_path, {key: value})
    assert not (tmp_path / "catalog").exists()
    (tmp_path / "catalog").write_text("garbage\n")
    with pytest.raises(errors.StagingError, match="not 'key= value'"):
        read_catalog(tmp_path)
    with pytest.raises(errors.StagingError, match="cannot read catalog"):
        read_catalog(tmp_path / "nope")


def test_values_with_control_characters_stay_on_their_line_and_read_back(tmp_path):
    # A display name may hold a newline, a tab or a CR (issue 14, item 7).
    name = "web\n01\tx\ry\\z\x1b"
    write_catalog(tmp_path, {"display name": name, "uuid": "u-1"})
    text = (tmp_path / "catalog").read_text()
    assert text == "display name= web\\n01\\tx\\ry\\\\z\\x1b\nuuid= u-1\n"
    assert read_catalog(tmp_path) == {"display name": name, "uuid": "u-1"}
