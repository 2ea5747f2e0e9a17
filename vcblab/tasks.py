"""vim.Task: work the lab does in a thread, visible as queued -> running -> success|error."""

from __future__ import annotations

import logging
import threading
import time

from pyVmomi import VmomiSupport, vim, vmodl

from vcblab.model import LabObject
from vcblab.vimdata import now

log = logging.getLogger(__name__)


class LabTask(LabObject):
    vim_type = vim.Task

    def __init__(self, lab, moref, name: str, description_id: str, entity, user: str):
        super().__init__(lab, moref)
        self.entity = entity  # the LabObject the task is about (filters by entity use it)
        self.info = vim.TaskInfo(
            key=moref,
            task=self.ref(),
            name=VmomiSupport.GetWsdlMethod("urn:vim25", name),
            descriptionId=description_id,
            entity=entity.ref() if entity is not None else None,
            entityName=getattr(entity, "inventory_name", None),
            state="queued",
            cancelled=False,
            cancelable=False,
            queueTime=now(),
            reason=vim.TaskReasonUser(userName=user),
            eventChainId=int(moref.split("-")[-1]),
        )
        self.done = threading.Event()

    def p_info(self):
        return self.info

    def set_progress(self, percent: int) -> None:
        self.info.progress = percent

    def finish(self, result=None, error=None) -> None:
        """End a task run by its owner (open_task): success with ``result``, or ``error``."""
        if self.done.is_set():
            return
        if error is None:
            self.info.result, self.info.progress, self.info.state = result, 100, "success"
        else:
            self.info.error, self.info.state = error, "error"
        self.info.completeTime = now()
        self.done.set()


def busy_with(lab, entity):
    """The running task that holds ``entity`` (an export lease's task), or None."""
    for lease in list(lab.leases.values()):
        task = lease.task
        if task is not None and task.entity is entity and not lease.finished():
            return task
    return None


def check_not_busy(lab, entity) -> None:
    """vCenter runs one operation on a VM at a time: while an export holds it, others fault."""
    task = busy_with(lab, entity) if entity is not None else None
    if task is not None:
        raise vim.fault.TaskInProgress(
            msg=f"The operation is not allowed in the current state: another task is already in "
            f"progress ({task.info.descriptionId} {task.moref}).",
            task=task.ref(),
        )


def open_task(call, entity, name: str, description_id: str) -> LabTask:
    """A task in state "running" that its owner ends with ``task.finish`` (an export lease)."""
    task = _new_task(call, entity, name, description_id)
    task.info.state, task.info.startTime, task.info.progress = "running", now(), 0
    return task


def _new_task(call, entity, name: str, description_id: str) -> LabTask:
    from vcblab.events import post_task_event

    lab = call.lab
    user = call.session.user if call.session else lab.user
    task = LabTask(lab, lab.next_moref("task"), name, description_id, entity, user)
    lab.add(task)
    post_task_event(lab, task, entity, user)
    return task


def start_task(call, entity, name: str, description_id: str, work) -> object:
    """Run `work(task)` in a thread (after the task_delay switch, and snapshot_remove_delay for a
    removal) and return the task's ref.

    `work` runs under the lab lock; what it returns becomes info.result, a vmodl.MethodFault
    it raises becomes info.error (any other exception is a lab bug, reported as SystemError).
    A VM held by another operation (an export lease) faults at once with TaskInProgress.
    """
    lab = call.lab
    check_not_busy(lab, getattr(entity, "vm", entity))
    task = _new_task(call, entity, name, description_id)

    def run():
        delay = lab.faults.get("task_delay") or 0.0
        if name == "RemoveSnapshot_Task":
            # Consolidating a large delta takes minutes on ESXi: a job may be stopped meanwhile.
            delay += lab.faults.get("snapshot_remove_delay") or 0.0
        task.info.state, task.info.startTime, task.info.progress = "running", now(), 0
        if delay:
            steps = 4
            for i in range(steps):
                time.sleep(delay / steps)
                task.info.progress = int(100 * (i + 1) / (steps + 1))
        try:
            with lab.lock:
                result = work(task)
            task.info.result, task.info.progress, task.info.state = result, 100, "success"
        except vmodl.MethodFault as fault:
            task.info.error, task.info.state = fault, "error"
        except Exception as exc:  # a lab bug: the client sees a SystemError, the log the cause
            log.exception("task %s failed", name)
            task.info.error = vmodl.fault.SystemError(msg=f"lab error: {exc}", reason=str(exc))
            task.info.state = "error"
        task.info.completeTime = now()
        task.done.set()

    threading.Thread(target=run, daemon=True, name=f"lab-{task.moref}").start()
    return task.ref()
