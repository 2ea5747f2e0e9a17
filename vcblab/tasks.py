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


def start_task(call, entity, name: str, description_id: str, work) -> object:
    """Run `work(task)` in a thread (after the task_delay switch) and return the task's ref.

    `work` runs under the lab lock; what it returns becomes info.result, a vmodl.MethodFault
    it raises becomes info.error (any other exception is a lab bug, reported as SystemError).
    """
    lab = call.lab
    task = LabTask(
        lab,
        lab.next_moref("task"),
        name,
        description_id,
        entity,
        call.session.user if call.session else lab.user,
    )
    lab.add(task)

    def run():
        delay = lab.faults.get("task_delay") or 0.0
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
