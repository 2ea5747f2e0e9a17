"""The exported .vmx: only disk fileName lines change; every other byte stays."""

from __future__ import annotations

import logging

from vcbproxy.staging.vmx import parse_vmx, rewrite_vmx

VMX = (
    '.encoding = "UTF-8"\r\n'
    "#!/usr/bin/vmware\r\n"
    '# a comment with scsi0:0.fileName = "not-me.vmdk"\r\n'
    'config.version = "8"\r\n'
    'displayName = "web01 S|C3|BCd"\r\n'
    'scsi0:0.present = "TRUE"\r\n'
    'scsi0:0.fileName = "web01-000002.vmdk"\r\n'
    'scsi0:0.ctkEnabled = "TRUE"\r\n'
    '  SCSI0:1.FILENAME="/vmfs/volumes/ds2/web01/web01_1.vmdk"  \r\n'
    'ide1:0.fileName = "/vmfs/volumes/iso/debian.iso"\r\n'
    'checkpoint.vmState = "web01-Snapshot3.vmsn"\r\n'
    'sched.swap.derivedName = "/vmfs/volumes/ds1/web01/web01-1a2b.vswp"\r\n'
    'annotation = "quote |22 pipe |7C"\r\n'
    "   \r\n"
    'guestOS = "debian12-64"'  # no final newline
)


def test_rewrite_changes_only_disk_lines():
    out = rewrite_vmx(VMX, {"scsi0:0": "scsi0-0-0-web01.vmdk", "scsi0:1": 'odd "name" |.vmdk'})
    old, new = VMX.splitlines(keepends=True), out.splitlines(keepends=True)
    assert new[6] == 'scsi0:0.fileName = "scsi0-0-0-web01.vmdk"\r\n'
    assert new[8] == '  SCSI0:1.FILENAME="odd |22name|22 |7C.vmdk"  \r\n'
    dropped = {10, 11}
    kept = [line for i, line in enumerate(old) if i not in {6, 8} | dropped]
    assert [line for i, line in enumerate(new) if i not in {6, 8}] == kept
    assert out.endswith('guestOS = "debian12-64"')
    assert parse_vmx(out)["scsi0:1.filename"] == 'odd "name" |.vmdk'


def test_rewrite_keeps_non_utf8_bytes_via_surrogateescape():
    raw = b'.encoding = "windows-1252"\nannotation = "caf\xe9"\nscsi0:0.fileName = "a.vmdk"\n'
    text = raw.decode("utf-8", "surrogateescape")
    out = rewrite_vmx(text, {"scsi0:0": "b.vmdk"}).encode("utf-8", "surrogateescape")
    assert out == raw.replace(b"a.vmdk", b"b.vmdk")


def test_missing_device_is_logged(caplog):
    with caplog.at_level(logging.WARNING, logger="vcbproxy.staging.vmx"):
        assert (
            rewrite_vmx('config.version = "8"\n', {"nvme0:0": "x.vmdk"}) == 'config.version = "8"\n'
        )
    assert "nvme0:0.filename" in caplog.text


def test_parse_vmx():
    entries = parse_vmx(VMX)
    assert entries["displayname"] == "web01 Süd"
    assert entries["scsi0:0.filename"] == "web01-000002.vmdk"
    assert entries["scsi0:1.filename"] == "/vmfs/volumes/ds2/web01/web01_1.vmdk"
    assert entries["annotation"] == 'quote " pipe |'
    assert entries["guestos"] == "debian12-64"
    assert not any(key.startswith("#") for key in entries)
