"""The transport factory, chain parsing, options and name resolution."""

from __future__ import annotations

import pytest

from vcbproxy import errors
from vcbproxy.models import DatastorePath
from vcbproxy.transport import MODES, ModeOptions, SanOptions, SshOptions, create, parse_chain
from vcbproxy.transport.base import resolve_relative
from vcbproxy.transport.fallback import FallbackTransport
from vcbproxy.transport.san import SanTransport


def test_parse_chain():
    assert parse_chain("san:nbdssl") == ["san", "nbdssl"]
    assert parse_chain("NBD") == ["nbd"]
    with pytest.raises(errors.UsageError, match="unknown transport mode 'ftp'.*nbdssl, nbd, san"):
        parse_chain("san:ftp")
    with pytest.raises(errors.UsageError, match="repeated"):
        parse_chain("san:san")
    with pytest.raises(errors.UsageError, match="empty"):
        parse_chain("san:")


def test_unknown_mode_lists_modes():
    with pytest.raises(errors.UsageError) as info:
        create("tape", session=None, options=ModeOptions())
    assert all(m in str(info.value) for m in MODES)
    assert info.value.exit_code == errors.USAGE


def test_hotadd_is_refused_not_faked():
    with pytest.raises(errors.UnsupportedError) as info:
        create("hotadd", session=None, options=ModeOptions())
    assert str(info.value) == (
        "hotadd needs the proxy to be a VM on the same ESXi host as the VM and is not available; "
        "use one of: nbdssl, nbd, san, ssh, nfc"
    )
    assert info.value.exit_code == errors.UNSUPPORTED


def test_chain_builds_fallback(tmp_path):
    t = create(
        "san:ssh",
        session=None,
        options=ModeOptions(
            san=SanOptions(san_map={"ds": str(tmp_path)}), ssh=SshOptions(host="127.0.0.1")
        ),
    )
    assert isinstance(t, FallbackTransport)
    assert [m.name for m in t.modes] == ["san", "ssh"]
    assert isinstance(t.modes[0], SanTransport)
    t.close()


def test_password_not_in_repr():
    assert "hunter2" not in repr(ModeOptions(ssh=SshOptions(password="hunter2")))


def test_ssh_needs_a_host():
    with pytest.raises(errors.UsageError, match="--ssh-host"):
        create("ssh", session=None, options=ModeOptions())


@pytest.mark.parametrize(
    "name, expected",
    [
        ("disk-flat.vmdk", DatastorePath("ds", "vm/disk-flat.vmdk")),
        ("../base/base.vmdk", DatastorePath("ds", "base/base.vmdk")),
        ("/vmfs/volumes/ds2/base/base.vmdk", DatastorePath("ds2", "base/base.vmdk")),
    ],
)
def test_resolve_relative(name, expected):
    assert resolve_relative(DatastorePath("ds", "vm"), name) == expected


@pytest.mark.parametrize(
    "name", ["../../x", "/etc/passwd", "", "/vmfs/volumes/ds/../../x", "a\x00b"]
)
def test_resolve_relative_refuses_escapes(name):
    with pytest.raises(errors.TransportError):
        resolve_relative(DatastorePath("ds", "vm"), name)
