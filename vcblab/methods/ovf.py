"""OvfManager.CreateDescriptor: the .ovf of an export (govc export.ovf, ovftool).

The descriptor is an OVF 1.x envelope (DSP0243) as vCenter writes one for a VM: the files
the caller downloaded through the lease (``cdp.ovfFiles``: lease device key, file name, size)
in References, one Disk per virtual disk (streamOptimized, capacity in bytes), the network,
and a VirtualSystem with CPU, memory, the SCSI controller, the disks and the NIC as CIM
resource items. With ``cdp.snapshot`` the disks are those of the snapshot's configuration.
A file naming a device the VM does not have is reported in ``result.error``.
"""

from __future__ import annotations

from xml.sax.saxutils import escape, quoteattr

from pyVmomi import vim

from vcblab.methods import method

OVF = "http://schemas.dmtf.org/ovf/envelope/1"
VMDK_FORMAT = "http://www.vmware.com/interfaces/specifications/vmdk.html#streamOptimized"
_NS = (
    f'xmlns="{OVF}" xmlns:ovf="{OVF}" '
    'xmlns:cim="http://schemas.dmtf.org/wbem/wscim/1/common" '
    'xmlns:rasd="http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/'
    'CIM_ResourceAllocationSettingData" '
    'xmlns:vssd="http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/'
    'CIM_VirtualSystemSettingData" '
    'xmlns:vmw="http://www.vmware.com/schema/ovf" '
    'xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"'
)


def _item(rtype: int, instance: int, name: str, desc: str, extra: str = "") -> str:
    return (
        "      <Item>\n"
        f"        <rasd:Description>{escape(desc)}</rasd:Description>\n"
        f"        <rasd:ElementName>{escape(name)}</rasd:ElementName>\n"
        f"        <rasd:InstanceID>{instance}</rasd:InstanceID>\n"
        f"        <rasd:ResourceType>{rtype}</rasd:ResourceType>\n"
        f"{extra}"
        "      </Item>\n"
    )


def descriptor(vm, files: list, name: str, description: str, config) -> tuple[str, list]:
    """(OVF text, [faults]) for ``vm`` with ``config`` (the VM's or a snapshot's)."""
    disks = [d for d in config.hardware.device if isinstance(d, vim.vm.device.VirtualDisk)]
    nics = [d for d in config.hardware.device if isinstance(d, vim.vm.device.VirtualEthernetCard)]
    by_unit = {d.unitNumber: d for d in disks}
    errors, refs, disk_file = [], [], {}
    for n, f in enumerate(files or []):
        unit = f.deviceId.rsplit(":", 1)[-1] if f.deviceId else ""
        disk = by_unit.get(int(unit)) if unit.isdigit() and f.deviceId.startswith("/") else None
        if disk is None:
            errors.append(
                vim.fault.OvfExport(
                    msg=f"The file {f.path} names device {f.deviceId!r}, which {vm.name} has not."
                )
            )
            continue
        file_id = f"file{n + 1}"
        refs.append(
            f'    <File ovf:href={quoteattr(f.path)} ovf:id="{file_id}" ovf:size="{f.size}"/>\n'
        )
        disk_file[disk.key] = file_id
    disk_lines, items = [], []
    instance = 1
    items.append(
        _item(
            3,
            instance,
            f"{config.hardware.numCPU} virtual CPU(s)",
            "Number of Virtual CPUs",
            f"        <rasd:AllocationUnits>hertz * 10^6</rasd:AllocationUnits>\n"
            f"        <rasd:VirtualQuantity>{config.hardware.numCPU}</rasd:VirtualQuantity>\n",
        )
    )
    instance += 1
    items.append(
        _item(
            4,
            instance,
            f"{config.hardware.memoryMB}MB of memory",
            "Memory Size",
            f"        <rasd:AllocationUnits>byte * 2^20</rasd:AllocationUnits>\n"
            f"        <rasd:VirtualQuantity>{config.hardware.memoryMB}</rasd:VirtualQuantity>\n",
        )
    )
    instance += 1
    controller = instance
    items.append(
        _item(
            6,
            controller,
            "SCSI controller 0",
            "SCSI Controller",
            "        <rasd:Address>0</rasd:Address>\n"
            "        <rasd:ResourceSubType>lsilogic</rasd:ResourceSubType>\n",
        )
    )
    for n, disk in enumerate(sorted(disks, key=lambda d: d.unitNumber)):
        disk_id = f"vmdisk{n + 1}"
        file_ref = f' ovf:fileRef="{disk_file[disk.key]}"' if disk.key in disk_file else ""
        disk_lines.append(
            f'    <Disk ovf:capacity="{disk.capacityInBytes}" ovf:capacityAllocationUnits="byte" '
            f'ovf:diskId="{disk_id}"{file_ref} ovf:format="{VMDK_FORMAT}"/>\n'
        )
        instance += 1
        items.append(
            _item(
                17,
                instance,
                disk.deviceInfo.label,
                "Hard disk",
                f"        <rasd:AddressOnParent>{disk.unitNumber}</rasd:AddressOnParent>\n"
                f"        <rasd:HostResource>ovf:/disk/{disk_id}</rasd:HostResource>\n"
                f"        <rasd:Parent>{controller}</rasd:Parent>\n",
            )
        )
    networks = []
    for nic in nics:
        net = nic.backing.deviceName
        networks.append(net)
        instance += 1
        items.append(
            _item(
                10,
                instance,
                nic.deviceInfo.label,
                "Ethernet adapter",
                "        <rasd:AddressOnParent>7</rasd:AddressOnParent>\n"
                "        <rasd:AutomaticAllocation>true</rasd:AutomaticAllocation>\n"
                f"        <rasd:Connection>{escape(net)}</rasd:Connection>\n"
                "        <rasd:ResourceSubType>VmxNet3</rasd:ResourceSubType>\n",
            )
        )
    network_section = "".join(
        f"    <Network ovf:name={quoteattr(n)}>\n"
        f"      <Description>The {escape(n)} network</Description>\n    </Network>\n"
        for n in dict.fromkeys(networks)
    )
    annotation = (
        f"    <AnnotationSection>\n      <Info>A human-readable annotation</Info>\n"
        f"      <Annotation>{escape(description)}</Annotation>\n    </AnnotationSection>\n"
        if description
        else ""
    )
    text = (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f"<Envelope {_NS}>\n"
        "  <References>\n" + "".join(refs) + "  </References>\n"
        "  <DiskSection>\n    <Info>Virtual disk information</Info>\n"
        + "".join(disk_lines)
        + "  </DiskSection>\n"
        "  <NetworkSection>\n    <Info>The list of logical networks</Info>\n"
        + network_section
        + "  </NetworkSection>\n"
        f"  <VirtualSystem ovf:id={quoteattr(name)}>\n"
        "    <Info>A virtual machine</Info>\n"
        f"    <Name>{escape(name)}</Name>\n"
        + annotation
        + f'    <OperatingSystemSection ovf:id="101" vmw:osType={quoteattr(config.guestId)}>\n'
        "      <Info>The kind of installed guest operating system</Info>\n"
        "    </OperatingSystemSection>\n"
        "    <VirtualHardwareSection>\n"
        "      <Info>Virtual hardware requirements</Info>\n"
        "      <System>\n"
        "        <vssd:ElementName>Virtual Hardware Family</vssd:ElementName>\n"
        "        <vssd:InstanceID>0</vssd:InstanceID>\n"
        f"        <vssd:VirtualSystemIdentifier>{escape(name)}</vssd:VirtualSystemIdentifier>\n"
        f"        <vssd:VirtualSystemType>{escape(config.version)}</vssd:VirtualSystemType>\n"
        "      </System>\n" + "".join(items) + "    </VirtualHardwareSection>\n"
        "  </VirtualSystem>\n"
        "</Envelope>\n"
    )
    return text, errors


@method("CreateDescriptor")
def create_descriptor(call, this, obj, cdp):
    from vcblab.vm import LabVm

    lab = call.lab
    with lab.lock:
        vm = lab.obj(obj._moId)
        if not isinstance(vm, LabVm):
            raise vim.fault.InvalidState(msg=f"{obj._moId} is not a virtual machine.")
        config = vm.config_info()
        if cdp.snapshot is not None:
            snap = lab.obj(cdp.snapshot._moId)
            if snap is None or getattr(snap, "vm", None) is not vm:
                raise vim.fault.InvalidState(
                    msg=f"{cdp.snapshot._moId} is not a snapshot of {vm.name}."
                )
            config = snap.config
        text, errors = descriptor(
            vm, cdp.ovfFiles, cdp.name or vm.inventory_name, cdp.description or "", config
        )
    return vim.OvfManager.CreateDescriptorResult(
        ovfDescriptor=text, error=errors, includeImageFiles=False
    )
