"""Waiting for a vSphere task by polling its ``info`` fields through the PropertyCollector.

Not ``pyVim.task.WaitForTask``: vcsim's snapshot-removal task reports an ``info.entity``
whose type pyVim rejects, so we read only the fields we need (state, error, result).
"""

from __future__ import annotations

import time

from vcbproxy import errors
from vcbproxy.vsphere.collector import object_props
from vcbproxy.vsphere.faults import fault_message, translated

FIELDS = ["info.state", "info.error", "info.result", "info.progress"]


def wait_for_task(
    session,
    task,
    *,
    timeout: float,
    what: str,
    error: type[errors.VcbProxyError] = errors.VcbProxyError,
):
    """The task's result once it succeeds; its fault as ``error`` (``raise ... from fault``,
    so callers can look at ``__cause__``); ``error`` too when ``timeout`` seconds pass."""
    deadline = time.monotonic() + timeout
    delay = 0.05
    while True:
        with translated(f"{what} (waiting for task {task._moId})", error):
            props = object_props(session, task, FIELDS)
        state = str(props.get("info.state", ""))
        if state == "success":
            return props.get("info.result")
        if state == "error":
            fault = props.get("info.error")
            message = fault_message(fault) if fault is not None else "unknown error"
            exc = error(f"{what} failed: {message}")
            if isinstance(fault, BaseException):
                raise exc from fault
            raise exc
        if time.monotonic() >= deadline:
            raise error(
                f"{what} did not finish within {timeout:.0f} s (task {task._moId} is {state or 'unknown'})"
            )
        time.sleep(min(delay, max(0.0, deadline - time.monotonic())))
        delay = min(delay * 1.5, 1.0)
