"""vcbproxy.json and the catalog: the v1 shape written field for field, read back, and a
damaged or foreign file refused with a one-line StagingError."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from vcbproxy import errors
from vcbproxy.staging.catalog import read_catalog
from vcbproxy.staging.metadata import (
    DiskRecord,
    ExportMetadata,
    SnapshotRecord,
    TransportRecord,
    VmRecord,
    catalog_fields,
    read_metadata,
    staged_vmx,
    write_export_catalog,
    write_metadata,
)

IDENTITY = ["device", "label", "key", "capacity", "disk_mode", "change_id", "uuid", "source"]


def sample() -> ExportMetadata:
    return ExportMetadata(
        vm=VmRecord(moref="vm-42", name="web01", uuid="4231-aa", vmx_path="[ds1] web01/web01.vmx"),
        snapshot=SnapshotRecord("snapshot-7", "_VCB-BACKUP_", "2024-01-02T03:04:05+00:00"),
        disks=[
            DiskRecord(
                device="scsi0:0",
                label="Hard disk 1",
                key=2000,
                capacity=8 << 20,
                source=["[ds1] web01/web01.vmdk", "[ds1] web01/web01-000001.vmdk"],
                files=["scsi0-0-web01.vmdk", "scsi0-0-web01-s001.vmdk"],
                content_sha256="ab" * 32,
                bytes_read=4 << 20,
                bytes_zero=4 << 20,
            ),
            DiskRecord(device="scsi0:1", label="Hard disk 2", key=2001, skipped=True),
        ],
        transport=TransportRecord(mode="nbdssl", bytes_read=5, requests=2, retries=0),
        format_written="2gbsparse",
        timings={"snapshot_create": 0.5, "snapshot_remove": 0.25},
        warnings=["scsi0:1 skipped"],
        server="vc:443",
        proxy_host="proxy",
    )


def test_written_as_format_1_field_for_field(tmp_path):
    write_metadata(tmp_path, sample())
    data = json.loads((tmp_path / "vcbproxy.json").read_text())
    assert list(data) == [
        "format",
        "vcbproxy",
        "proxy_host",
        "server",
        "vm",
        "snapshot",
        "transport",
        "format_written",
        "checksum",
        "disks",
        "started",
        "finished",
        "seconds",
        "snapshot_seconds",
        "timings",
        "warnings",
    ]
    assert data["format"] == "vcbproxy-export/1"
    copied, skipped = data["disks"]
    assert list(copied) == IDENTITY + [
        "files",
        "content_sha256",
        "allocation_map",
        "bytes_read",
        "bytes_zero",
        "seconds",
        "sync_seconds",
    ]
    assert skipped == {**{k: skipped[k] for k in IDENTITY}, "skipped": True}
    assert list(skipped) == IDENTITY + ["skipped"]
    # bytes_on_wire only where it differs from bytes_read (SSH's python reader)
    assert "bytes_on_wire" not in data["transport"]
    meta = sample()
    meta.transport.bytes_on_wire = 3
    assert meta.to_json()["transport"]["bytes_on_wire"] == 3


def test_read_back_equal(tmp_path):
    write_metadata(tmp_path, sample())
    meta = read_metadata(tmp_path)
    assert meta == sample()
    assert [d.device for d in meta.copied_disks] == ["scsi0:0"]


def test_a_restore_point_has_only_vm_and_disks():
    meta = ExportMetadata.from_json(
        {
            "vm": {"name": "web01", "moref": "vm-1", "uuid": "u", "host": "h", "extra": 1},
            "disks": [{"device": "scsi0:0", "files": ["a.vmdk"], "capacity": "1048576"}],
        }
    )
    assert meta.vm.name == "web01" and meta.disks[0].capacity == 1 << 20
    assert meta.snapshot == SnapshotRecord() and meta.checksum == "sha256"


@pytest.mark.parametrize(
    "text, needle",
    [
        ("[]", "not a JSON object"),
        ('{"vm": [], "disks": []}', "VmRecord"),
        ('{"disks": [{"label": "no device"}]}', "device"),
        ('{"disks": [{"device": "scsi0:0", "capacity": "big"}]}', "big"),
        ("{not json", "cannot read"),
    ],
)
def test_a_damaged_file_is_a_staging_error_naming_it(tmp_path, text, needle):
    (tmp_path / "vcbproxy.json").write_text(text)
    with pytest.raises(errors.StagingError) as info:
        read_metadata(tmp_path)
    assert needle in str(info.value) and "vcbproxy.json" in str(info.value)


def test_no_metadata_is_not_an_export(tmp_path):
    with pytest.raises(errors.StagingError, match="is not a vcbproxy export"):
        read_metadata(tmp_path)


def test_catalog_says_what_vcb_said(tmp_path):
    fields = catalog_fields(sample(), "web01.vmx", now=datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC))
    assert fields["display name"] == "web01" and fields["config.vmxfile"] == "web01.vmx"
    assert fields["timestamp"] == "Tue Jan 02 03:04:05 2024"
    assert fields["disk.scsi0:0.filename"] == "scsi0-0-web01.vmdk"
    assert fields["disk.scsi0:0.diskname"] == '"[ds1] web01/web01.vmdk"'  # the base layer
    assert "disk.scsi0:1.filename" not in fields  # skipped
    (tmp_path / "web01.vmx").write_text("")
    (tmp_path / "other.vmx").write_text("")
    write_export_catalog(tmp_path, sample(), "web01.vmx")
    assert read_catalog(tmp_path)["config.vmx"] == '"[ds1] web01/web01.vmx"'
    assert staged_vmx(tmp_path) == "web01.vmx"  # the catalog names it among two
    (tmp_path / "catalog").unlink()
    with pytest.raises(errors.StagingError, match="expected one .vmx file, found 2"):
        staged_vmx(tmp_path)
