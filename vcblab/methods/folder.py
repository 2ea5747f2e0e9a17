"""vim.Folder: RegisterVM_Task, which builds a VM from a .vmx already on a datastore."""

from __future__ import annotations

import re
import uuid as uuidlib

from pyVmomi import vim

from vcblab import vmx
from vcblab.disks import LabDisk, plain_uuid
from vcblab.events import post_vm_event
from vcblab.inventory import Folder
from vcblab.methods import method
from vcblab.tasks import start_task
from vcblab.vm import DISK_KEY_BASE, DiskSlot, LabVm
from vcbproxy.staging.vmx import parse_vmx

_VOLUME = re.compile(r"^/vmfs/volumes/([^/]+)/(.+)/([^/]+)$")


def _uuid(vmx_value: str | None) -> str:
    """'56 4d ... 9a-..' (vmx form) -> canonical UUID; a fresh one if absent or malformed."""
    return plain_uuid(vmx_value) or str(uuidlib.uuid4())


def register_vm(lab, folder, path: str, name: str | None) -> LabVm:
    # A datastore path means something in the folder's datacenter only.
    dc = folder.datacenter()
    host_path = lab.datastore_path(path, dc)
    if host_path is None or not host_path.is_file():
        raise vim.fault.NotFound(msg=f"File {path} was not found")
    if any(vm.vmx_path == path and vm.datacenter() is dc for vm in lab.vms()):
        raise vim.fault.AlreadyExists(msg=f"The VM {path} is already registered.", name=path)
    datastore = path[1:].split("]", 1)[0]
    directory = host_path.parent.relative_to(dc.datastores[datastore].path.resolve()).as_posix()
    values = parse_vmx(host_path.read_text(encoding="utf-8", errors="replace"))
    instance = _uuid(values.get("vc.uuid"))
    if any(vm.instance_uuid == instance for vm in lab.vms()):
        instance = str(uuidlib.uuid4())  # vCenter hands a copy a new instance UUID
    vm = LabVm(
        lab,
        lab.next_moref("vm"),
        name or values.get("displayname") or host_path.stem,
        folder,
        datastore=datastore,
        directory=directory,
        uuid=_uuid(values.get("uuid.bios")),
        instance_uuid=instance,
        guest_id=values.get("guestos", "otherLinux64Guest"),
        memory_mb=int(values.get("memsize", "1024") or 1024),
        cpus=int(values.get("numvcpus", "1") or 1),
        tools=True,
        powered_on=False,
    )
    try:
        for disk in vmx.disks_of(values):
            match = _VOLUME.match(disk["file"])
            ds, ddir, fname = match.groups() if match else (datastore, directory, disk["file"])
            if ds not in dc.datastores:
                raise vim.fault.NotFound(msg=f"Datastore {ds} of disk {disk['file']} not found")
            try:
                lab_disk = LabDisk.load(dc.datastores[ds].path / ddir, fname, None)
                lab_disk.delta_format = lab.delta_format(ds, lab_disk.capacity, dc)
            except (OSError, ValueError) as exc:
                raise vim.fault.FileNotFound(
                    msg=f"Cannot open the disk {disk['file']}: {exc}", file=f"[{ds}] {ddir}/{fname}"
                ) from None
            key = DISK_KEY_BASE + disk["unit"]
            vm.slots[key] = DiskSlot(
                datastore=ds, directory=ddir, unit=disk["unit"], mode=disk["mode"], ctk=disk["ctk"]
            )
            vm.disks[key] = lab_disk
        vm.cbt_enabled = values.get("ctkenabled", "FALSE").upper() == "TRUE"
        if "annotation" in values:
            vm.annotation = vmx.unescape(values["annotation"])
        vm.apply_change_tracking()  # registered powered off: the setting holds at once
        lab.add(vm)
    except BaseException:
        for lab_disk in vm.disks.values():  # nothing registered: close the disks loaded so far
            lab_disk.close()
        raise
    return vm


@method("RegisterVM_Task")
def register_vm_task(call, this, path, asTemplate, name=None, pool=None, host=None):
    user = call.session.user

    def work(task):
        vm = register_vm(call.lab, this, path, name)
        post_vm_event(
            call.lab,
            vim.event.VmRegisteredEvent,
            vm,
            user,
            f"Registered {vm.inventory_name} on {vm.host.inventory_name} in {vm.datacenter_name()}",
            chain_id=task.info.eventChainId,
        )
        return vm.ref()

    return start_task(call, this, "RegisterVM_Task", "Folder.registerVm", work)


@method("CreateFolder")
def create_folder(call, this, name):
    lab = call.lab
    with lab.lock:
        if any(c.name == name for c in this.children()):
            raise vim.fault.DuplicateName(
                msg=f"The name '{name}' already exists.", name=name, object=this.ref()
            )
        folder = Folder(
            lab, lab.next_moref("group-v"), name, this, ("Folder", "VirtualMachine", "VirtualApp")
        )
        lab.add(folder)
        return folder.ref()
