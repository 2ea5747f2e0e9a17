"""Which VMs a selector names (vcbVmName, and every command's ``-a``); the server answers."""

from __future__ import annotations

from typing import TYPE_CHECKING

from vcbproxy.models import VmRef
from vcbproxy.selectors import Selector

if TYPE_CHECKING:  # pyVmomi: loaded only when a job talks to a server
    from vcbproxy.vsphere.session import Session

# Selectors that may name any number of VMs; the others name exactly one.
MULTI_VM_KINDS = frozenset({"any", "powerstate"})


def resolve_vm(session: Session, selector: Selector) -> VmRef:
    """The one VM ``selector`` names: NotFoundError when none, AmbiguousError (naming their
    morefs) when several."""
    from vcbproxy.vsphere import inventory  # pyVmomi: loaded only when a job talks to a server

    return inventory.resolve_vm(session, selector)


def find_vms(session: Session, selector: Selector) -> list[VmRef]:
    """Every VM ``selector`` matches (maybe none)."""
    from vcbproxy.vsphere import inventory  # pyVmomi: loaded only when a job talks to a server

    return inventory.find_vms(session, selector)


def matching_vms(session: Session, selector: Selector) -> list[VmRef]:
    """``any`` and ``powerstate:`` list every match; the other kinds their one VM (or fail)."""
    if selector.kind in MULTI_VM_KINDS:
        return find_vms(session, selector)
    return [resolve_vm(session, selector)]
