"""VM selectors as vcbVmName/vcbMounter took them: ``kind:value``.

Pure parsing, no server access: :mod:`vcbproxy.vsphere.inventory` applies a selector.
"""

from __future__ import annotations

from dataclasses import dataclass

from vcbproxy import errors

KINDS = ("any", "name", "ipaddr", "uuid", "moref", "powerstate")
POWER_STATES = {"on": "poweredOn", "off": "poweredOff"}
VALID = (
    "any | name:<display name> (exact) | ipaddr:<ip or DNS name> | uuid:<BIOS uuid> | "
    "moref:<id> | powerstate:on|off"
)


@dataclass(frozen=True)
class Selector:
    kind: str
    value: str = ""

    def __str__(self) -> str:
        return self.kind if self.kind == "any" else f"{self.kind}:{self.value}"


def parse_selector(text: str) -> Selector:
    """``any``, ``name:X`` (exact, case-sensitive, may contain ':'), ``ipaddr:X``, ``uuid:X``,
    ``moref:X``, ``powerstate:on|off``; anything else is a usage error listing the kinds."""
    text = (text or "").lstrip()  # not rstrip: a display name may end in a space
    if text.rstrip() == "any":
        return Selector("any", "")
    kind, sep, value = text.partition(":")
    kind = kind.strip().lower()
    if not sep or kind not in KINDS or kind == "any":
        raise errors.UsageError(f"bad selector {text!r}: use one of {VALID}")
    if kind != "name":
        # Only a display name may legitimately carry surrounding spaces.
        value = value.strip()
    if not value:
        raise errors.UsageError(f"selector {kind}: needs a value ({VALID})")
    if kind == "powerstate":
        value = value.lower()
        if value not in POWER_STATES:
            raise errors.UsageError(
                f"bad power state {value!r}: use powerstate:on or powerstate:off"
            )
    if kind == "uuid":
        value = normalise_uuid(value)
    return Selector(kind, value)


def normalise_uuid(text: str) -> str:
    """BIOS uuids are shown with or without dashes/spaces (VCB printed '42 31 ...-...');
    compare them as 32 lowercase hex digits."""
    return "".join(ch for ch in text.lower() if ch not in "- {}")
