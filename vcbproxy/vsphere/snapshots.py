"""Snapshots of a VM: create, remove, list (flattened tree), and find by name."""

from __future__ import annotations

import logging

from pyVmomi import vim, vmodl

from vcbproxy import errors
from vcbproxy.models import SnapshotRef, VmRef
from vcbproxy.selectors import Selector
from vcbproxy.vsphere.collector import container_view, object_props, props_of, retrieve, view_spec
from vcbproxy.vsphere.faults import translated
from vcbproxy.vsphere.inventory import find_vms, unescape_name, vm_object
from vcbproxy.vsphere.tasks import wait_for_task

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT = 1800.0
# What vSphere raises when a quiesced snapshot cannot be taken (no Tools, or the guest's
# VSS/sync driver failed); other snapshot faults get no --no-quiesce hint.
QUIESCE_FAULTS = (
    vim.fault.ApplicationQuiesceFault,
    vim.fault.ToolsUnavailable,
    vim.fault.QuiesceDatastoreIOForHAFailed,
)


def _iso(dt) -> str:
    return dt.isoformat() if dt is not None else ""


def _refs(trees, vm_moref: str) -> list[SnapshotRef]:
    """VirtualMachineSnapshotTree list -> SnapshotRef list (same shape, children nested)."""
    out = []
    for t in trees or []:
        out.append(
            SnapshotRef(
                moref=t.snapshot._moId,
                name=unescape_name(t.name),
                description=t.description or "",
                created=_iso(t.createTime),
                vm_moref=vm_moref,
                children=tuple(_refs(t.childSnapshotList, vm_moref)),
            )
        )
    return out


def _flatten(refs) -> list[SnapshotRef]:
    out = []
    for r in refs:
        out.append(r)
        out.extend(_flatten(r.children))
    return out


def _sorted(refs: list[SnapshotRef]) -> list[SnapshotRef]:
    return sorted(refs, key=lambda s: s.created)  # stable: tree order when times tie


def list_snapshots(session, vm: VmRef) -> list[SnapshotRef]:
    """Every snapshot of the VM, oldest first (the tree flattened; each keeps its children)."""
    with translated(f"listing snapshots of {vm.name}", errors.SnapshotError):
        info = object_props(session, vm_object(session, vm), ["snapshot"]).get("snapshot")
    return _sorted(_flatten(_refs(info.rootSnapshotList if info else [], vm.moref)))


def find_snapshots_named(session, vm: VmRef, name: str) -> list[SnapshotRef]:
    return [s for s in list_snapshots(session, vm) if s.name == name]


def find_all_vcb_snapshots(session, *, name: str) -> list[tuple[VmRef, SnapshotRef]]:
    """(VM, snapshot) for every snapshot called ``name`` in the inventory: one pass for the
    snapshot trees, then the VmRefs of only the VMs that have one."""
    view = container_view(session, [vim.VirtualMachine])
    try:
        spec = vmodl.query.PropertyCollector.PropertySpec(
            type=vim.VirtualMachine, pathSet=["snapshot"]
        )
        with translated("listing snapshots", errors.SnapshotError):
            contents = retrieve(session, [view_spec(view)], [spec])
    finally:
        view.DestroyView()
    hits: dict[str, list[SnapshotRef]] = {}
    for c in contents:
        info = props_of(c).get("snapshot")
        if info is None:
            continue
        named = [s for s in _flatten(_refs(info.rootSnapshotList, c.obj._moId)) if s.name == name]
        if named:
            hits[c.obj._moId] = _sorted(named)
    if not hits:
        return []
    vms = {v.moref: v for v in find_vms(session, Selector("any"))}
    return [(vms[m], s) for m in sorted(hits) if m in vms for s in hits[m]]


def start_create(
    session, vm: VmRef, name: str, *, description: str, memory: bool, quiesce: bool
) -> str:
    """Start ``CreateSnapshot_Task``; the task's moref (wait for it with :func:`finish_create`).

    A job keeps the moref from this moment on: if it is stopped while the task runs, it must
    wait for the task and remove what it made (``jobs.backup_snapshot.JobSnapshot``)."""
    what = f"taking snapshot {name!r} of {vm.name}"
    obj = vm_object(session, vm)
    try:
        with translated(what, errors.SnapshotError):
            task = obj.CreateSnapshot_Task(
                name=name, description=description, memory=memory, quiesce=quiesce
            )
    except errors.SnapshotError as exc:
        raise _quiesce_hint(exc, quiesce) from exc.__cause__
    return task._moId


def finish_create(
    session,
    vm: VmRef,
    task: str,
    *,
    name: str,
    description: str = "",
    quiesce: bool = False,
    timeout: float = DEFAULT_TIMEOUT,
) -> SnapshotRef:
    """Wait for the create task ``task``; the snapshot it made (SnapshotError if it failed).
    Safe to call again on a task already finished: it answers the same."""
    what = f"taking snapshot {name!r} of {vm.name}"
    try:
        snap = wait_for_task(
            session,
            task_object(session, task),
            timeout=timeout,
            what=what,
            error=errors.SnapshotError,
        )
    except errors.SnapshotError as exc:
        raise _quiesce_hint(exc, quiesce) from exc.__cause__
    moref = snap._moId if snap is not None else ""
    for s in list_snapshots(session, vm):
        if s.moref == moref or (not moref and s.name == name):
            return s
    # The task said yes but the tree does not show it (yet): still hand back what we know.
    return SnapshotRef(moref=moref, name=name, description=description, vm_moref=vm.moref)


def _quiesce_hint(exc: errors.SnapshotError, quiesce: bool) -> errors.SnapshotError:
    # The quiesce fault may come back from the call itself or from the task.
    if quiesce and isinstance(exc.__cause__, QUIESCE_FAULTS):
        return errors.SnapshotError(
            f"{exc}; quiescing needs VMware Tools running in the guest: retry with --no-quiesce "
            f"for a crash-consistent snapshot"
        )
    return exc


def create_snapshot(
    session,
    vm: VmRef,
    name: str,
    *,
    description: str = "",
    memory: bool = False,
    quiesce: bool = False,
    timeout: float = DEFAULT_TIMEOUT,
) -> SnapshotRef:
    task = start_create(session, vm, name, description=description, memory=memory, quiesce=quiesce)
    return finish_create(
        session, vm, task, name=name, description=description, quiesce=quiesce, timeout=timeout
    )


def start_remove(session, moref: str, *, consolidate: bool = True) -> str:
    """Start removing one snapshot (not its children); the task's moref. A snapshot that is
    already gone is NotFoundError."""
    what = f"removing snapshot {moref}"
    snap = vim.vm.Snapshot(moref, session.stub)
    try:
        with translated(what, errors.SnapshotError):
            task = snap.RemoveSnapshot_Task(removeChildren=False, consolidate=consolidate)
    except errors.NotFoundError as exc:
        raise errors.NotFoundError(f"snapshot {moref} does not exist (already removed?)") from exc
    return task._moId


def finish_remove(session, moref: str, task: str, *, timeout: float = DEFAULT_TIMEOUT) -> None:
    """Wait for the removal task ``task`` of snapshot ``moref``."""
    wait_for_task(
        session,
        task_object(session, task),
        timeout=timeout,
        what=f"removing snapshot {moref}",
        error=errors.SnapshotError,
    )


def remove_snapshot(
    session, moref: str, *, timeout: float = DEFAULT_TIMEOUT, consolidate: bool = True
) -> None:
    """Remove one snapshot (not its children); one that is already gone is NotFoundError."""
    task = start_remove(session, moref, consolidate=consolidate)
    finish_remove(session, moref, task, timeout=timeout)


def task_object(session, task: str):
    return vim.Task(task, session.stub)


def snapshot_object(session, snapshot: SnapshotRef | str):
    return vim.vm.Snapshot(snapshot if isinstance(snapshot, str) else snapshot.moref, session.stub)
