"""vim.vm.Snapshot methods."""

from __future__ import annotations

from vcblab import snapshots
from vcblab.methods import method
from vcblab.tasks import start_task


@method("RemoveSnapshot_Task")
def remove_snapshot(call, this, removeChildren, consolidate=None):
    # consolidate=False would leave the delta in place on ESXi ("consolidation needed"); the
    # lab always merges, which is what every backup tool asks for.
    return start_task(
        call,
        this.vm,
        "RemoveSnapshot_Task",
        "VirtualMachine.removeSnapshot",
        lambda task: snapshots.remove_snapshot(call.lab, this, bool(removeChildren)),
    )
