"""vim.ManagedEntity methods every inventory object has."""

from __future__ import annotations

from pyVmomi import vim

from vcblab.methods import method
from vcblab.tasks import start_task


@method("Rename_Task")
def rename(call, this, newName):
    def work(task):
        if not newName:
            raise vim.fault.InvalidName(msg="The name must not be empty.", name=newName)
        # The caller gives the plain name; the inventory shows it %-escaped, as vSphere does.
        this.name = newName
        if hasattr(this, "touch_config"):
            this.touch_config()

    return start_task(call, this, "Rename_Task", "ManagedEntity.rename", work)
