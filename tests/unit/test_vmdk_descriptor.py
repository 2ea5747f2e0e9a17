"""Descriptor parsing is tolerant of what real tools write, strict about what is unusable."""

import pytest

from vcbproxy.vmdk import VmdkError
from vcbproxy.vmdk.descriptor import Extent, geometry, new_descriptor, parse, render

ESX_DESCRIPTOR = """# Disk DescriptorFile\r
version=1\r
encoding="UTF-8"\r
CID=fffffffe\r
parentCID=ffffffff\r
isNativeSnapshot="no"\r
createType="vmfs"\r
\r
# Extent description\r
RW 4194304 VMFS "win2k3-flat.vmdk"\r
\r
# The Disk Data Base \r
#DDB\r
\r
ddb.adapterType = "lsilogic"\r
ddb.geometry.cylinders = "261"\r
ddb.uuid = "60 00 C2 9a 12 34 56 78-9a bc de f0 12 34 56 78"\r
ddb.virtualHWVersion = "7"\r
"""

DELTA = """version=1
CID=1a2b3c4d
parentCID=fffffffe
createType = "monolithicSparse"
parentFileNameHint="/vmfs/volumes/ds1/vm/vm.vmdk"
RW 2048 SPARSE "vm-000001.vmdk"
RDONLY 8 ZERO
"""


def test_parse_esx_descriptor_with_crlf_and_comments():
    d = parse(ESX_DESCRIPTOR)
    assert d.version == 1
    assert d.cid == 0xFFFFFFFE and d.parent_cid == 0xFFFFFFFF
    assert d.create_type == "vmfs"
    assert d.parent_hint is None
    assert d.extents == [Extent("RW", 4194304, "VMFS", "win2k3-flat.vmdk", 0)]
    assert d.capacity == 4194304 * 512
    assert d.ddb["geometry.cylinders"] == "261"
    assert d.ddb["uuid"].startswith("60 00 C2 9a")


def test_parse_delta_with_parent_hint_and_zero_extent():
    d = parse(DELTA)
    assert d.cid == 0x1A2B3C4D and d.parent_cid == 0xFFFFFFFE
    assert d.create_type == "monolithicSparse"
    assert d.parent_hint == "/vmfs/volumes/ds1/vm/vm.vmdk"
    assert d.extents[1] == Extent("RDONLY", 8, "ZERO", None, 0)
    assert d.capacity == (2048 + 8) * 512


def test_flat_extent_offset_and_unquoted_names():
    d = parse("version=1\nRW 100 FLAT disk-flat.vmdk 7\n")
    assert d.extents == [Extent("RW", 100, "FLAT", "disk-flat.vmdk", 7)]


def test_render_round_trips():
    d = parse(ESX_DESCRIPTOR)
    again = parse(render(d))
    assert again == d
    assert "\r" not in render(d)


def test_embedded_descriptor_nul_padding_is_ignored():
    text = 'version=1\nRW 8 SPARSE "a.vmdk"\n' + "\0" * 300
    assert parse(text).capacity == 4096


@pytest.mark.parametrize(
    "text, words",
    [
        ("hello world\n", "not a VMDK descriptor"),
        ('version=1\ncreateType="vmfs"\n', "no extents"),
        ('version=1\nCID=xyz\nRW 8 FLAT "a" 0\n', "CID"),
        ('version=1\nRW 8 BOGUS "a"\n', "unknown extent type"),
        ('version=1\nRW 8 FLAT "a" 0\ngarbage\n', "line 3: cannot parse"),
        ("version=1\nRW 8 FLAT\n", "without a file name"),
        ('version=one\nRW 8 FLAT "a"\n', "version"),
    ],
)
def test_parse_errors_name_the_problem(text, words):
    with pytest.raises(VmdkError, match=words):
        parse(text)


def test_vmdk_error_is_a_value_error():
    with pytest.raises(ValueError):
        parse("")


def test_new_descriptor_fills_ddb():
    cap = 8 * 1024**3
    d = new_descriptor(
        "monolithicSparse",
        [Extent("RW", cap // 512, "SPARSE", "x.vmdk")],
        capacity=cap,
        uuid="6000c29a-1234-5678-9abc-def012345678",
    )
    assert d.capacity == cap
    assert d.parent_cid == 0xFFFFFFFF and d.parent_hint is None
    assert 0 < d.cid < 0xFFFFFFFF
    assert d.ddb["adapterType"] == "lsilogic"
    assert (d.ddb["geometry.heads"], d.ddb["geometry.sectors"]) == ("255", "63")
    assert d.ddb["geometry.cylinders"] == str(cap // 512 // (255 * 63))
    assert d.ddb["uuid"] == "60 00 c2 9a 12 34 56 78-9a bc de f0 12 34 56 78"
    assert len(d.ddb["longContentID"]) == 32
    assert "virtualHWVersion" in d.ddb
    assert parse(render(d)) == d


def test_new_descriptor_delta_and_ide_geometry():
    d = new_descriptor(
        "monolithicSparse",
        [Extent("RW", 2048, "SPARSE", "d.vmdk")],
        capacity=2048 * 512,
        parent_hint="base.vmdk",
        parent_cid=0x1234,
        adapter="ide",
    )
    assert d.parent_hint == "base.vmdk" and d.parent_cid == 0x1234
    assert d.ddb["geometry.heads"] == "16"
    assert geometry(1 << 40, "ide")[0] == 16383


def test_new_descriptor_rejects_unknown_adapter():
    with pytest.raises(VmdkError, match="adapter"):
        new_descriptor("vmfs", [], capacity=512, adapter="floppy")
