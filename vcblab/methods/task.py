"""Task methods a client may call on a vim.Task."""

from __future__ import annotations

from pyVmomi import vim

from vcblab.methods import method


@method("CancelTask")
def cancel_task(call, this):
    raise vim.fault.InvalidState(msg="The lab's tasks cannot be cancelled.")
