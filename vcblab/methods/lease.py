"""ExportVm / ExportSnapshot and the HttpNfcLease calls (progress, complete, abort)."""

from __future__ import annotations

from pyVmomi import vim

from vcblab.lease import open_lease
from vcblab.methods import method


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
        return open_lease(call.lab, this, {k: d.mark() for k, d in this.disks.items()}).ref()


@method("ExportSnapshot")
def export_snapshot(call, this):
    with call.lab.lock:
        entry = call.lab.snapshot_history[this.moref]
        # Independent disks are not in the snapshot: they export with their current content.
        marks = {k: entry["marks"].get(k) for k in this.vm.disks}
        return open_lease(call.lab, this.vm, marks).ref()


def _live(this):
    state = this._state()
    if state != "ready":
        if state == "error" and this.lease.error is not None:
            raise this.lease.error
        raise vim.fault.InvalidState(msg=f"The lease is {state}.")


@method("HttpNfcLeaseProgress")
def lease_progress(call, this, percent):
    _live(this)
    this.lease.touch()
    this.lease.progress = int(percent)


@method("HttpNfcLeaseComplete")
def lease_complete(call, this):
    _live(this)
    this.lease.state = "done"


@method("HttpNfcLeaseAbort")
def lease_abort(call, this, fault=None):
    if this.lease.state == "ready":
        this.lease.state = "error"
        this.lease.error = fault or vim.fault.InvalidState(msg="The lease was aborted.")
