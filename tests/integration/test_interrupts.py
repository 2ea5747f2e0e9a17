"""Ctrl-C is never swallowed: at each place that turns a failure into a warning, a reported
problem or "go on with the next one", a SIGINT must still stop the job.

Each test sends this process a real SIGINT under the real handler (``signals_raise``, which
turns it into :class:`errors.Interrupted` and ignores any later signal) while the job is
inside the call such a handler guards: during a vSphere task the lab keeps running for a
while (``task_delay``), or as the call starts where the call is too short to hit. A handler
that caught the interrupt would let the job finish (a warning, a problem line, the next
snapshot) and ``pytest.raises`` would fail; with the first signal ignored from then on, the
Ctrl-C would be lost for good.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from datetime import timedelta

import pytest

from tests.e2e.cli import exported
from tests.fixtures.endpoints import lab_endpoint, server_spec
from tests.unit.test_repository import commit_run
from vcbproxy import errors
from vcbproxy.jobs import restore as restore_job
from vcbproxy.jobs.connection import connect
from vcbproxy.jobs.signals import signals_raise
from vcbproxy.jobs.snapshots import sweep
from vcbproxy.jobs.verify import verify_export
from vcbproxy.models import DatastorePath
from vcbproxy.progress import Progress
from vcbproxy.repository.store import Repository, RunInfo
from vcbproxy.repository.verify import verify_repository
from vcbproxy.selectors import Selector
from vcbproxy.vsphere import datastore, inventory, register, snapshots

TARGET_DS = "datastore2"


def ctrl_c_in(monkeypatch, owner, name: str, *, after: float | None = None) -> list:
    """Wrap ``owner.name`` so that calling it sends this process SIGINT: ``after`` seconds
    into the (real) call, or, with ``after=None``, as it starts. Returns the calls seen."""
    real = getattr(owner, name)
    calls: list = []

    def wrapper(*args, **kwargs):
        calls.append(args)
        if after is None:
            os.kill(os.getpid(), signal.SIGINT)
        else:
            threading.Timer(after, os.kill, (os.getpid(), signal.SIGINT)).start()
        return real(*args, **kwargs)

    monkeypatch.setattr(owner, name, wrapper)
    return calls


@pytest.fixture
def session(lab):
    with connect(server_spec(lab_endpoint(lab))) as s:
        yield s


@pytest.fixture
def lab_client(lab):
    from vcblab.client import LabClient

    client = LabClient(lab.info)
    yield client
    client.set_faults(task_delay=0.0)


@pytest.fixture(scope="module")
def files01_export(lab, tmp_path_factory):
    """A finished export of files01 (powered off, one disk), made by the CLI."""
    return exported(lab.info, "files01", tmp_path_factory.mktemp("interrupts") / "files01-fullVM")


def _destroy_named(session, name: str, *, power_on: bool = False) -> None:
    from pyVmomi import vim

    from tests.fixtures.lab import run_task

    for ref in inventory.find_vms(session, Selector("name", name)):
        vm = vim.VirtualMachine(ref.moref, session.stub)
        deadline = time.monotonic() + 15
        while vm.runtime.powerState != "poweredOn" and time.monotonic() < deadline and power_on:
            time.sleep(0.1)  # the interrupted power-on task still runs on the host
        if vm.runtime.powerState == "poweredOn":
            run_task(vm.PowerOffVM_Task())
        run_task(vm.Destroy_Task())


def test_ctrl_c_while_the_restored_vm_powers_on_is_not_a_warning(
    session, lab_client, files01_export, monkeypatch
):
    name = "interrupt-power-on"
    lab_client.set_faults(task_delay=1.5)
    calls = ctrl_c_in(monkeypatch, register, "power_on", after=0.3)
    options = restore_job.RestoreOptions(
        source=files01_export, name=name, datastore=TARGET_DS, power_on=True, verify=False
    )
    try:
        with signals_raise(), pytest.raises(errors.Interrupted):
            restore_job.restore(session, options, Progress.create("quiet"))
        assert calls, "the restore never powered the VM on"
    finally:
        lab_client.set_faults(task_delay=0.0)
        _destroy_named(session, name, power_on=True)


def test_ctrl_c_while_the_replaced_vms_files_are_deleted_is_not_a_warning(
    session, lab_client, files01_export, monkeypatch
):
    name = "interrupt-overwrite"
    options = restore_job.RestoreOptions(
        source=files01_export, name=name, datastore=TARGET_DS, verify=False
    )
    restore_job.restore(session, options, Progress.create("quiet"))
    lab_client.set_faults(task_delay=1.5)
    calls = ctrl_c_in(monkeypatch, datastore, "delete_file", after=0.3)
    options.policy = "overwrite"
    try:
        with signals_raise(), pytest.raises(errors.Interrupted):
            restore_job.restore(session, options, Progress.create("quiet"))
        assert calls, "the old VM's files were never deleted"
    finally:
        lab_client.set_faults(task_delay=0.0)
        monkeypatch.undo()
        _destroy_named(session, name)
        for directory in (name, f"{name}_1"):
            try:
                datastore.delete_file(session, DatastorePath(TARGET_DS, directory))
            except errors.NotFoundError:
                pass


def test_ctrl_c_during_a_snapshot_sweep_stops_the_sweep(session, lab_client, monkeypatch):
    vm = inventory.resolve_vm(session, Selector("name", "files01"))
    made = [snapshots.create_snapshot(session, vm, "_VCB-BACKUP_") for _ in range(2)]
    lab_client.set_faults(task_delay=1.5)
    calls = ctrl_c_in(monkeypatch, snapshots, "remove_snapshot", after=0.3)
    try:
        with signals_raise(), pytest.raises(errors.Interrupted):
            sweep(session, older_than=timedelta(0))
        assert len(calls) == 1, "the sweep went on to the next snapshot"
    finally:
        lab_client.set_faults(task_delay=0.0)
        monkeypatch.undo()
        for snap in snapshots.find_snapshots_named(session, vm, "_VCB-BACKUP_"):
            snapshots.remove_snapshot(session, snap.moref)
    assert len(made) == 2


@pytest.mark.parametrize("guarded", ["verify_manifest", "read_catalog"])
def test_ctrl_c_while_an_export_verifies_is_not_a_problem_line(
    files01_export, monkeypatch, guarded
):
    """restore verifies the export first, under the signal handler: a Ctrl-C there must stop
    the restore (130), not become "corrupt: ..." and a refusal (16)."""
    from vcbproxy.jobs import verify

    calls = ctrl_c_in(monkeypatch, verify, guarded)
    with signals_raise(), pytest.raises(errors.Interrupted):
        verify_export(files01_export, qemu_img=False)
    assert calls


def test_ctrl_c_while_a_repository_verifies_is_not_a_problem_line(tmp_path, monkeypatch):
    repo = Repository.open(tmp_path / "repo", create=True)
    commit_run(repo, "u1", [(0, b"a" * 4096)])
    assert verify_repository(tmp_path / "repo") == []
    calls = ctrl_c_in(monkeypatch, RunInfo, "load")
    with signals_raise(), pytest.raises(errors.Interrupted):
        verify_repository(tmp_path / "repo")
    assert calls


def test_ctrl_c_while_logging_out_is_not_swallowed(lab, monkeypatch):
    session = connect(server_spec(lab_endpoint(lab)))
    manager = session.content.sessionManager
    calls = ctrl_c_in(monkeypatch, type(manager), "Logout")
    with signals_raise(), pytest.raises(errors.Interrupted):
        session.close()
    assert calls and session.content is None  # the connections were dropped all the same
