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
    annotation: str = "",
    extra: dict[str, str] | None = None,
    nic: dict | None = None,
) -> str:
    """A .vmx as ESXi writes it: one key = "value" a line, disks by controller:unit.

    A disk's ``ctk`` (scsi0:N.ctkEnabled) defaults to ``cbt``; ``extra`` holds the
    extraConfig keys a reconfigure set, written as ESXi keeps them, among the others.
    """
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
    ]
    if annotation:
        lines.append(("annotation", _vmx_escape(annotation)))
    lines += [
        ("scsi0.present", "TRUE"),
        ("scsi0.virtualDev", "lsilogic"),
    ]
    for disk in disks:
        dev = f"scsi0:{disk['unit']}"
        lines += [
            (f"{dev}.present", "TRUE"),
            (f"{dev}.fileName", disk["file"]),
            (f"{dev}.mode", disk["mode"]),
            (f"{dev}.ctkEnabled", "TRUE" if disk.get("ctk", cbt) else "FALSE"),
        ]
    if nic:
        lines += [
            ("ethernet0.present", "TRUE"),
            ("ethernet0.virtualDev", "vmxnet3"),
            ("ethernet0.networkName", nic["network"]),
            ("ethernet0.addressType", "static"),
            ("ethernet0.address", nic["mac"]),
        ]
    lines += [(k, _vmx_escape(v)) for k, v in sorted((extra or {}).items())]
    return "".join(f'{k} = "{v}"\n' for k, v in lines)


def _bool(value: str | None) -> bool | None:
    return None if value is None else value.strip().upper() == "TRUE"


def _vmx_escape(value: str) -> str:
    """ESXi's escaping inside a quoted .vmx value: '|' as |7C, '"' as |22, newlines as |0A."""
    out = []
    for ch in value:
        if ch in '|"' or ord(ch) < 0x20:
            out.append(f"|{ord(ch):02X}")
        else:
            out.append(ch)
    return "".join(out)


def unescape(value: str) -> str:
    """The inverse of the |XX escaping (a value read back by RegisterVM)."""
    return re.sub(r"\|([0-9A-Fa-f]{2})", lambda m: chr(int(m.group(1), 16)), value)


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
                "ctk": _bool(values.get(f"{dev}.ctkenabled")),
            }
        )
    return sorted(disks, key=lambda d: (d["controller"], d["unit"]))
