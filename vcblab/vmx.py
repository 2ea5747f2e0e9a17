"""The .vmx configuration file: written for each lab VM, parsed again by RegisterVM
(with :func:`vcbproxy.staging.vmx.parse_vmx`, the parser the exporter uses)."""

from __future__ import annotations

import re

from vcbproxy.vmdk.descriptor import ddb_uuid

_DISK_KEY = re.compile(r"^(scsi|ide|sata|nvme)(\d+):(\d+)\.fileName$", re.IGNORECASE)


def escape_name(name: str) -> str:
    """vSphere's escaping of a display name: '%', '/' and '\\' become %25, %2f and %5c."""
    return name.replace("%", "%25").replace("/", "%2f").replace("\\", "%5c")


def render(
    *,
    name: str,
    uuid: str,
    instance_uuid: str,
    guest_os: str,
    memory_mb: int,
    cpus: int,
    disks: list[dict],
    cbt: bool,
    nvram: str,
) -> str:
    """A .vmx as ESXi writes it: one key = "value" a line, disks by controller:unit."""
    lines = [
        (".encoding", "UTF-8"),
        ("config.version", "8"),
        ("virtualHW.version", "19"),
        ("displayName", name),
        ("guestOS", guest_os),
        ("memSize", str(memory_mb)),
        ("numvcpus", str(cpus)),
        ("nvram", nvram),
        ("uuid.bios", ddb_uuid(uuid)),
        ("vc.uuid", ddb_uuid(instance_uuid)),
        ("ctkEnabled", "TRUE" if cbt else "FALSE"),
        ("scsi0.present", "TRUE"),
        ("scsi0.virtualDev", "lsilogic"),
    ]
    for disk in disks:
        dev = f"scsi0:{disk['unit']}"
        lines += [
            (f"{dev}.present", "TRUE"),
            (f"{dev}.fileName", disk["file"]),
            (f"{dev}.mode", disk["mode"]),
            (f"{dev}.ctkEnabled", "TRUE" if cbt else "FALSE"),
        ]
    return "".join(f'{k} = "{v}"\n' for k, v in lines)


def disks_of(values: dict[str, str]) -> list[dict]:
    """Disks named by a .vmx parsed by ``parse_vmx`` (lower-case keys): controller, unit,
    file name and mode."""
    disks = []
    for key, value in values.items():
        match = _DISK_KEY.match(key)
        if not match or not value.lower().endswith(".vmdk"):
            continue
        dev = f"{match.group(1)}{match.group(2)}:{match.group(3)}"
        if values.get(f"{dev}.present", "TRUE").upper() != "TRUE":
            continue
        disks.append(
            {
                "controller": int(match.group(2)),
                "unit": int(match.group(3)),
                "file": value,
                "mode": values.get(f"{dev}.mode", "persistent"),
            }
        )
    return sorted(disks, key=lambda d: (d["controller"], d["unit"]))
