"""A VM whose display name holds a newline and a tab, both legal in vSphere (issue 14, item 7),
is exported like any other, and the name never splits a line of a line-based output: the
``name:`` line of ``vcbproxy vms`` (vcbVmName), the catalog, the run log and the terminal's
log lines show it with C-style escapes; ``vcbproxy.json`` (JSON) keeps it as it is; file names
replace the characters, as before. Before, ``vms`` printed the raw newline inside its ``name:``
line, logs got it raw, and ``mount`` refused the VM only after the whole copy (14, "catalog
entry cannot be written on one line").

A carriage return cannot be tested this way: pyVmomi writes it raw into the SOAP request and
XML's end-of-line handling turns it into a newline in the server's parser (vCenter's as the
lab's), so no name with a CR reaches a pyVmomi client through ``Rename_Task``; its escaping is
tested in tests/unit/test_lines.py and test_staging_catalog.py.
"""

from __future__ import annotations

import pytest

from tests.e2e.cli import run
from tests.e2e.faults import assert_no_snapshot_left
from tests.e2e.oracle import assert_export_matches_lab, metadata
from tests.fixtures.lab import find_vm, run_task
from vcbproxy.staging.catalog import read_catalog

VM = "nfs01"
NAME = "nfs01\nsecond line\tafter a tab"
SHOWN = "nfs01\\nsecond line\\tafter a tab"


@pytest.fixture
def renamed(lab_si):
    """``VM`` renamed to ``NAME`` through vSphere's own call, and back afterwards; its moref."""
    vm = find_vm(lab_si, VM)
    run_task(vm.Rename_Task(NAME))
    try:
        assert vm.name == NAME  # the lab keeps the name as given
        yield vm._moId
    finally:
        run_task(vm.Rename_Task(VM))


def test_vms_prints_the_name_on_its_line(env, renamed):
    res = run(env, "vms", "-s", f"moref:{renamed}")
    assert res.code == 0, res
    assert res.out.strip("\n").splitlines() == [
        "Found VM:",
        f"moref:{renamed}",
        f"name:{SHOWN}",
        *[line for line in res.out.splitlines() if line.startswith(("uuid:", "ipaddr:"))],
    ], res.out
    res = run(env, "vms", "-s", f"name:{NAME}")  # the raw name selects it
    assert res.code == 0 and f"moref:{renamed}" in res.out, res


def test_export_of_a_name_with_a_newline_and_a_tab(env, lab_client, renamed, tmp_path):
    target = tmp_path / "export"
    res = run(env, "-v", "mount", "-a", f"moref:{renamed}", "-r", str(target))
    assert res.code == 0, res
    assert_no_snapshot_left(lab_client, renamed)  # by moref: the name changed
    meta = assert_export_matches_lab(target, lab_client, tmp_path)
    assert meta["vm"]["name"] == NAME == metadata(target)["vm"]["name"]

    catalog = (target / "catalog").read_text(encoding="utf-8")
    assert f"display name= {SHOWN}\n" in catalog
    assert all("=" in line for line in catalog.splitlines()), catalog
    assert read_catalog(target)["display name"] == NAME
    # Files are named with the characters replaced, as every server name is.
    assert all("\n" not in p.name and "\t" not in p.name for p in target.iterdir())
    assert (target / "scsi0-0-nfs01_second line_after a tab.vmdk").is_file()

    # Every log line, in the run log and on the terminal, is one record.
    log_text = (target / "vcbproxy.log").read_text(encoding="utf-8")
    assert SHOWN in log_text and "second line" not in log_text.replace(SHOWN, "")
    assert all(line[:4].isdigit() for line in log_text.splitlines()), log_text
    assert f"{SHOWN}: exported to {target}" in res.err
    stray = [line for line in res.err.splitlines() if not line.startswith(("vcbproxy: ", SHOWN))]
    assert not stray, res.err

    res = run(env, "verify", str(target))
    assert res.code == 0, res
