"""ExportVm / ExportSnapshot and the HttpNfcLease calls (progress, complete, abort).

vCenter runs an export as a long-running operation: a task ("Export OVF template",
VirtualMachine.ExportVmLRO) holds the VM from the lease's creation until it is completed,
aborted or timed out, and other operations on the VM fault with TaskInProgress meanwhile.
"""

from __future__ import annotations

from pyVmomi import vim

from vcblab.lease import open_lease
from vcblab.methods import method
from vcblab.tasks import check_not_busy, open_task

EXPORT_TASK = "VirtualMachine.ExportVmLRO"


@method("ExportVm")
def export_vm(call, this):
    with call.lab.lock:
        if this.powered_on:
            raise vim.fault.InvalidPowerState(
                msg="The attempted operation cannot be performed in the current state "
                "(Powered on).",
                requestedState="poweredOff",
                existingState="poweredOn",
            )
        check_not_busy(call.lab, this)
        task = open_task(call, this, "ExportVm", EXPORT_TASK)
        marks = {k: d.mark() for k, d in this.disks.items()}
        return open_lease(call.lab, this, marks, task).ref()


@method("ExportSnapshot")
def export_snapshot(call, this):
    with call.lab.lock:
        check_not_busy(call.lab, this.vm)
        entry = call.lab.snapshot_history[this.moref]
        # Independent disks are not in the snapshot: they export with their current content.
        marks = {k: entry["marks"].get(k) for k in this.vm.disks}
        task = open_task(call, this.vm, "ExportSnapshot", EXPORT_TASK)
        return open_lease(call.lab, this.vm, marks, task).ref()


def _live(this):
    state = this._state()
    if state != "ready":
        if state == "error" and this.lease.error is not None:
            raise this.lease.error
        raise vim.fault.InvalidState(msg=f"The lease is {state}.")


@method("HttpNfcLeaseProgress")
def lease_progress(call, this, percent):
    _live(this)
    this.lease.set_progress(int(percent))


@method("HttpNfcLeaseComplete")
def lease_complete(call, this):
    _live(this)
    this.lease.end("done")


@method("HttpNfcLeaseAbort")
def lease_abort(call, this, fault=None):
    this.lease.end("error", fault or vim.fault.InvalidState(msg="The lease was aborted."))
