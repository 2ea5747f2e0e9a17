"""The VMDK text descriptor: parse, render, and build new ones.

A descriptor has three parts (spec section "The Descriptor File"): a header of ``key=value``
lines (version, CID, parentCID, createType, parentFileNameHint), extent lines
(``RW 4192256 SPARSE "disk-s001.vmdk"``, ``RW 2048 FLAT "disk-flat.vmdk" 0``, ``RW 8 ZERO``)
and the disk database (``ddb.key = "value"``). Parsing is tolerant of comments, blank lines,
quotes, spacing and CRLF, because descriptors are written by many tools.
"""

from __future__ import annotations

import re
import secrets
import uuid as uuidlib
from dataclasses import dataclass, field

from vcbproxy.vmdk import VmdkError

SECTOR = 512
NO_PARENT_CID = 0xFFFFFFFF

ACCESS_MODES = ("RW", "RDONLY", "NOACCESS")
EXTENT_TYPES = ("FLAT", "SPARSE", "ZERO", "VMFS", "VMFSSPARSE", "VMFSRDM", "VMFSRAW", "SESPARSE")

ADAPTERS = ("ide", "buslogic", "lsilogic", "legacyESX", "lsisas1068", "pvscsi")

_EXTENT_RE = re.compile(
    r"""^(?P<access>RW|RDONLY|NOACCESS)\s+(?P<sectors>\d+)\s+(?P<type>[A-Za-z]+)
        (?:\s+"(?P<qname>[^"]*)"|\s+(?P<name>\S+))?(?:\s+(?P<offset>\d+))?\s*$""",
    re.VERBOSE,
)


@dataclass
class Extent:
    """One extent line: ``sectors`` of the virtual disk stored in ``filename`` at ``offset``."""

    access: str
    sectors: int
    type: str
    filename: str | None
    offset: int = 0  # in sectors; only meaningful for FLAT/VMFS extents


@dataclass
class Descriptor:
    version: int = 1
    cid: int = 0xFFFFFFFE
    parent_cid: int = NO_PARENT_CID
    create_type: str = "monolithicSparse"
    parent_hint: str | None = None
    extents: list[Extent] = field(default_factory=list)
    ddb: dict[str, str] = field(default_factory=dict)
    encoding: str | None = "UTF-8"

    @property
    def capacity(self) -> int:
        """Virtual disk size in bytes (the sum of the extents)."""
        return sum(e.sectors for e in self.extents) * SECTOR

    @property
    def has_parent(self) -> bool:
        return bool(self.parent_hint)


def _unquote(value: str) -> str:
    value = value.strip()
    if len(value) >= 2 and value[0] == value[-1] == '"':
        return value[1:-1]
    return value


def _hex(value: str, key: str) -> int:
    try:
        return int(value, 16)
    except ValueError:
        raise VmdkError(f"descriptor: {key}={value!r} is not a hexadecimal number") from None


def parse(text: str) -> Descriptor:
    """A :class:`Descriptor` from descriptor text; :class:`VmdkError` says what is wrong."""
    if "\x00" in text:
        text = text.split("\x00", 1)[0]  # embedded descriptors are NUL-padded
    d = Descriptor(ddb={}, extents=[], encoding=None)
    seen_version = False
    for lineno, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        m = _EXTENT_RE.match(line)
        if m:
            name = m.group("qname") if m.group("qname") is not None else m.group("name")
            etype = m.group("type").upper()
            if etype not in EXTENT_TYPES:
                raise VmdkError(f"descriptor line {lineno}: unknown extent type {etype!r}")
            if etype != "ZERO" and not name:
                raise VmdkError(f"descriptor line {lineno}: {etype} extent without a file name")
            d.extents.append(
                Extent(
                    m.group("access"),
                    int(m.group("sectors")),
                    etype,
                    name or None,
                    int(m.group("offset") or 0),
                )
            )
            continue
        if "=" not in line:
            if not seen_version and not d.extents:
                raise VmdkError(f"not a VMDK descriptor (line {lineno}: {line[:40]!r})")
            raise VmdkError(f"descriptor line {lineno}: cannot parse {line[:80]!r}")
        key, _, value = line.partition("=")
        key, value = key.strip(), _unquote(value)
        lkey = key.lower()
        if lkey.startswith("ddb."):
            d.ddb[key[4:]] = value
        elif lkey == "version":
            try:
                d.version = int(value)
            except ValueError:
                raise VmdkError(f"descriptor: version={value!r} is not a number") from None
            seen_version = True
        elif lkey == "encoding":
            d.encoding = value
        elif lkey == "cid":
            d.cid = _hex(value, "CID")
        elif lkey == "parentcid":
            d.parent_cid = _hex(value, "parentCID")
        elif lkey == "createtype":
            d.create_type = value
        elif lkey == "parentfilenamehint":
            d.parent_hint = value or None
        # other header keys (isNativeSnapshot, changeTrackPath, ...) are ignored on purpose
    if not seen_version and not d.extents:
        raise VmdkError("not a VMDK descriptor (no version line and no extents)")
    if not d.extents:
        raise VmdkError("descriptor lists no extents")
    return d


def render(d: Descriptor) -> str:
    """Descriptor text in the layout VMware tools write (LF line ends)."""
    lines = ["# Disk DescriptorFile", f"version={d.version}"]
    if d.encoding:
        lines.append(f'encoding="{d.encoding}"')
    lines += [f"CID={d.cid:08x}", f"parentCID={d.parent_cid:08x}", f'createType="{d.create_type}"']
    if d.parent_hint:
        lines.append(f'parentFileNameHint="{d.parent_hint}"')
    lines += ["", "# Extent description"]
    for e in d.extents:
        line = f"{e.access} {e.sectors} {e.type}"
        if e.filename is not None:
            line += f' "{e.filename}"'
            # FLAT lines carry their offset (qemu-img requires it); VMFS lines never do, as
            # ESXi writes them (qemu-img refuses an offset there).
            if e.type == "FLAT":
                line += f" {e.offset}"
        lines.append(line)
    lines += ["", "# The Disk Data Base", "#DDB", ""]
    lines += [f'ddb.{k} = "{v}"' for k, v in d.ddb.items()]
    return "\n".join(lines) + "\n"


def geometry(capacity: int, adapter: str) -> tuple[int, int, int]:
    """(cylinders, heads, sectors) as VMware derives them: IDE uses 16 heads, SCSI 255."""
    sectors_total = capacity // SECTOR
    heads, sectors = (16, 63) if adapter == "ide" else (255, 63)
    cylinders = max(1, sectors_total // (heads * sectors))
    if adapter == "ide":
        cylinders = min(cylinders, 16383)
    return cylinders, heads, sectors


def new_descriptor(
    create_type: str,
    extents: list[Extent],
    *,
    capacity: int,
    uuid: str | None = None,
    parent_hint: str | None = None,
    parent_cid: int | None = None,
    adapter: str = "lsilogic",
) -> Descriptor:
    """A fresh descriptor with a random CID and a complete disk database."""
    if adapter not in ADAPTERS:
        raise VmdkError(f"unknown adapter type {adapter!r}; use one of: {', '.join(ADAPTERS)}")
    cyl, heads, secs = geometry(capacity, adapter)
    disk_uuid = uuid or str(uuidlib.uuid4())
    ddb = {
        "adapterType": adapter,
        "geometry.cylinders": str(cyl),
        "geometry.heads": str(heads),
        "geometry.sectors": str(secs),
        "longContentID": secrets.token_hex(16),
        "uuid": ddb_uuid(disk_uuid),
        "virtualHWVersion": "4",
    }
    cid = secrets.randbelow(0xFFFFFFFD) + 1
    return Descriptor(
        version=1,
        cid=cid,
        parent_cid=NO_PARENT_CID if parent_cid is None else parent_cid,
        create_type=create_type,
        parent_hint=parent_hint,
        extents=list(extents),
        ddb=ddb,
    )


def ddb_uuid(value: str) -> str:
    """A uuid the way VMware writes it (``ddb.uuid``, ``.vmx`` ``uuid.bios``, CBT change IDs):
    16 space-separated hex bytes with a dash in the middle."""
    hexdigits = value.replace("-", "").replace(" ", "").lower()
    if len(hexdigits) != 32 or any(c not in "0123456789abcdef" for c in hexdigits):
        return value  # already in some other form: keep as given
    pairs = [hexdigits[i : i + 2] for i in range(0, 32, 2)]
    return " ".join(pairs[:8]) + "-" + " ".join(pairs[8:])
