"""Pure pieces of the lab's wire handling: request body framing, .vmx value escaping, and
the declared types property values take on in anyType."""

from __future__ import annotations

import io

import pytest
from pyVmomi import VmomiSupport, vim

from vcblab import httpbody, vmx
from vcblab.methods.properties import typed


def _headers(**kv) -> dict:
    return {k.replace("_", "-").title(): v for k, v in kv.items()}


def test_chunked_body_with_extensions_and_trailers():
    raw = b"5;name=x\r\nhello\r\n1\r\n \r\n5\r\nworld\r\n0\r\nX-Trailer: 1\r\n\r\nNEXT"
    stream = io.BytesIO(raw)
    body = httpbody.read_all(stream, _headers(transfer_encoding="chunked"), 100)
    assert body == b"hello world"
    assert stream.read() == b"NEXT"  # the next request on the connection is untouched


def test_chunked_reader_in_small_reads():
    reader = httpbody.ChunkedReader(io.BytesIO(b"a\r\n0123456789\r\n0\r\n\r\n"))
    assert [reader.read(4), reader.read(4), reader.read(4), reader.read(4)] == [
        b"0123",
        b"4567",
        b"89",
        b"",
    ]


@pytest.mark.parametrize(
    ("raw", "status"),
    [
        (b"zz\r\nabc\r\n0\r\n\r\n", 400),  # not hex
        (b"5\r\nab", 400),  # body ends inside a chunk
        (b"3\r\nabcXY0\r\n\r\n", 400),  # no CRLF after the data
        (b"", 400),  # nothing at all
    ],
)
def test_malformed_chunked_bodies(raw, status):
    with pytest.raises(httpbody.BodyError) as err:
        httpbody.read_all(io.BytesIO(raw), _headers(transfer_encoding="chunked"), 100)
    assert err.value.status == status


def test_limits_and_missing_framing():
    big = b"b\r\n" + b"x" * 11 + b"\r\n0\r\n\r\n"
    with pytest.raises(httpbody.BodyError) as err:
        httpbody.read_all(io.BytesIO(big), _headers(transfer_encoding="chunked"), 10)
    assert err.value.status == 413
    assert (
        httpbody.read_all(io.BytesIO(big), _headers(transfer_encoding="chunked"), 11) == b"x" * 11
    )
    with pytest.raises(httpbody.BodyError) as err:
        httpbody.read_all(io.BytesIO(b"abc"), {}, 10)
    assert err.value.status == 411
    with pytest.raises(httpbody.BodyError) as err:
        httpbody.read_all(io.BytesIO(b"abc"), _headers(content_length="20"), 10)
    assert err.value.status == 413
    assert httpbody.read_all(io.BytesIO(b"abcdef"), _headers(content_length="3"), 10) == b"abc"


def test_vmx_values_escape_and_come_back():
    text = 'quote " pipe | line\nend'
    rendered = vmx.render(
        name="v",
        uuid="12345678-1234-1234-1234-123456789012",
        instance_uuid="12345678-1234-1234-1234-123456789012",
        guest_os="otherLinux64Guest",
        memory_mb=1024,
        cpus=1,
        disks=[{"unit": 0, "file": "v.vmdk", "mode": "persistent", "ctk": False}],
        cbt=True,
        nvram="v.nvram",
        annotation=text,
        extra={"guestinfo.x": "1"},
    )
    assert 'annotation = "quote |22 pipe |7C line|0Aend"' in rendered
    assert 'ctkEnabled = "TRUE"' in rendered and 'scsi0:0.ctkEnabled = "FALSE"' in rendered
    assert vmx.unescape("quote |22 pipe |7C line|0Aend") == text


def test_values_take_their_declared_types():
    state = typed("ready", vim.HttpNfcLease.State)
    assert isinstance(state, vim.HttpNfcLease.State) and state == "ready"
    assert type(typed(5, VmomiSupport.long)) is VmomiSupport.long
    names = typed(["a", "b"], VmomiSupport.GetVmodlType("string[]"))
    assert names.Item is str
    ref = vim.Folder("group-d1")
    assert typed(ref, vim.ManagedEntity) is ref
    assert typed(None, VmomiSupport.long) is None
