"""Server-provided names never escape the staging directory, and stay stable and distinct."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from vcbproxy import errors
from vcbproxy.staging import names
from vcbproxy.staging.names import export_dir_name, inside, safe_component, unique

HOSTILE = [
    "../../etc",
    "a/b",
    "a%2fb",
    "a%2Fb",
    "%2e%2e%2f%2e%2e",
    "..",
    ".",
    "",
    "   ",
    "\x00",
    "a\x00b",
    "a\nb",
    "a\\b",
    "..\\..\\windows",
    "-rf",
    "/etc/passwd",
    "\x1b[31mred",
    "x" * 300,
    "é" * 300,
    "%2f" * 100,
    "\ud800lone",
]


@pytest.mark.parametrize("name", HOSTILE)
def test_hostile_names_give_one_safe_component(tmp_path, name):
    safe = safe_component(name)
    assert safe and safe not in (".", "..")
    assert not any(c in safe for c in "/\\\x00\n\x1b")
    assert not safe.startswith("-")
    assert len(safe.encode("utf-8")) <= names.MAX_BYTES
    assert safe_component(name) == safe  # deterministic
    # The real file system agrees: it is one entry, directly inside the root.
    (tmp_path / safe).write_bytes(b"x")
    assert os.listdir(tmp_path) == [safe]
    assert inside(tmp_path, tmp_path / safe).parent == tmp_path.resolve()


def test_ordinary_names_are_kept():
    assert safe_component("web01") == "web01"
    assert safe_component("web01.vmx") == "web01.vmx"
    assert safe_component("Datenbank Süd (prod)") == "Datenbank Süd (prod)"
    assert safe_component("日本語のVM") == "日本語のVM"


def test_vsphere_escapes_are_decoded_then_slashes_replaced():
    assert safe_component("a%2fb") == "a_b"
    assert safe_component("a%5cb") == "a_b"
    assert safe_component("100%25") == "100%"
    assert safe_component("%41") == "%41"  # not a vSphere escape: left alone
    assert safe_component("../../etc") == ".._.._etc"


def test_unicode_is_normalised_to_nfc():
    decomposed = "Se\u0301verine"
    assert safe_component(decomposed) == "S\u00e9verine"
    assert safe_component(decomposed) == safe_component("S\u00e9verine")


def test_long_names_are_cut_distinctly_and_keep_their_extension():
    a, b = "x" * 300 + "a.vmdk", "x" * 300 + "b.vmdk"
    sa, sb = safe_component(a), safe_component(b)
    assert sa != sb
    assert sa.endswith(".vmdk") and sb.endswith(".vmdk")
    assert len(sa.encode()) <= 200
    multibyte = safe_component("ü" * 150)  # 300 bytes; must not split a character
    assert len(multibyte.encode()) <= 200
    multibyte.encode("utf-8").decode("utf-8")


def test_export_dir_name():
    assert export_dir_name("web01") == "web01-fullVM"
    assert export_dir_name("../../etc") == ".._.._etc-fullVM"
    long = export_dir_name("v" * 300)
    assert long.endswith("-fullVM") and len(long.encode()) <= 200
    assert export_dir_name("..") == "__-fullVM"


def test_unique():
    assert unique("web01", set()) == "web01"
    assert unique("web01", {"web01"}) == "web01-2"
    assert unique("web01", {"web01", "web01-2"}) == "web01-3"
    assert unique("web01.vmx", {"web01.vmx"}) == "web01-2.vmx"
    assert unique("web.01-fullVM", {"web.01-fullVM"}) == "web.01-fullVM-2"
    taken = {"a"}
    unique("a", taken)
    assert taken == {"a"}
    long = "y" * 200
    assert len(unique(long, {long}).encode()) <= 200


def test_distinct_names_that_collide_are_disambiguated_by_unique():
    taken: set[str] = set()
    out = []
    for vm in ["a/b", "a%2fb", "a\\b"]:
        name = unique(export_dir_name(vm), taken)
        taken.add(name)
        out.append(name)
    assert out == ["a_b-fullVM", "a_b-fullVM-2", "a_b-fullVM-3"]


def test_inside_refuses_escapes(tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    assert inside(root, Path("f")) == root.resolve() / "f"
    assert inside(root, root / "sub" / "f") == root.resolve() / "sub" / "f"
    for bad in ["../x", "/etc/passwd", "sub/../../x"]:
        with pytest.raises(errors.StagingError, match="outside the staging directory"):
            inside(root, Path(bad))


def test_inside_follows_symlinks(tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    outside = tmp_path / "outside"
    outside.mkdir()
    (root / "link").symlink_to(outside)
    (root / "dangling").symlink_to(tmp_path / "nowhere" / "file")
    (root / "ok").symlink_to(root / "sub")
    with pytest.raises(errors.StagingError) as info:
        inside(root, root / "link" / "file")
    assert info.value.exit_code == errors.STAGING
    with pytest.raises(errors.StagingError):
        inside(root, root / "dangling")
    assert inside(root, root / "ok" / "f") == root.resolve() / "sub" / "f"


def test_check_component():
    assert names.check_component("vcbproxy.json") == "vcbproxy.json"
    for bad in ["", ".", "..", "a/b", "a\x00b", "x" * 256]:
        with pytest.raises(errors.StagingError, match="unsafe file name"):
            names.check_component(bad)
