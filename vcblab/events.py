"""The lab's event log: what vCenter's EventManager records (logins, power changes,
reconfigurations, registrations, tasks), for QueryEvents and event history collectors.

Events are real pyVmomi ``vim.event.*`` objects with the entity arguments vCenter fills
(datacenter, compute resource, host, VM), so a filter by entity finds a VM's events through
any of its ancestors. Posting never fails a caller: an event is a side record.
"""

from __future__ import annotations

import threading

from pyVmomi import vim

from vcblab.vimdata import now

MAX_EVENTS = 5000  # vCenter keeps its events in a database; the lab keeps the newest ones


class EventLog:
    def __init__(self):
        self._lock = threading.Lock()
        self._events: list = []  # oldest first
        self._next_key = 1

    def post(self, event, *, chain_id: int | None = None):
        """Give ``event`` its key, chain and time and record it; returns it."""
        with self._lock:
            event.key = self._next_key
            self._next_key += 1
            event.chainId = event.key if chain_id is None else chain_id
            event.createdTime = now()
            self._events.append(event)
            del self._events[:-MAX_EVENTS]
        return event

    def all(self) -> list:
        """Every recorded event, oldest first."""
        with self._lock:
            return list(self._events)

    def latest(self):
        with self._lock:
            return self._events[-1] if self._events else None


def entity_arguments(entity) -> dict:
    """The Event fields that name ``entity`` and where it sits, as vCenter fills them."""
    from vcblab.inventory import HostSystem
    from vcblab.vm import LabVm

    if entity is None:
        return {}
    args = {}
    dc = entity.datacenter() if hasattr(entity, "datacenter") else None
    if dc is not None:
        args["datacenter"] = vim.event.DatacenterEventArgument(
            name=dc.inventory_name, datacenter=dc.ref()
        )
    host = entity.host if isinstance(entity, LabVm) else entity
    if isinstance(host, HostSystem):
        args["host"] = vim.event.HostEventArgument(name=host.inventory_name, host=host.ref())
        if host.parent is not None and issubclass(host.parent.vim_type, vim.ComputeResource):
            args["computeResource"] = vim.event.ComputeResourceEventArgument(
                name=host.parent.inventory_name, computeResource=host.parent.ref()
            )
    if isinstance(entity, LabVm):
        args["vm"] = vim.event.VmEventArgument(name=entity.inventory_name, vm=entity.ref())
    return args


def post_vm_event(lab, kind, vm, user: str, message: str, *, chain_id=None, **fields):
    """A VmEvent subclass about ``vm`` (template is always False in the lab)."""
    event = kind(
        userName=user,
        template=False,
        fullFormattedMessage=message,
        **entity_arguments(vm),
        **fields,
    )
    return lab.events.post(event, chain_id=chain_id)


def post_task_event(lab, task, entity, user: str) -> None:
    """vCenter's "Task: <description>" event, chained to the task."""
    info = task.info
    event = vim.event.TaskEvent(
        userName=user,
        info=info,
        fullFormattedMessage=f"Task: {info.descriptionId}",
        **entity_arguments(entity),
    )
    lab.events.post(event, chain_id=info.eventChainId)
