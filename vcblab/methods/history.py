"""EventManager.QueryEvents, and the task and event history collectors."""

from __future__ import annotations

import uuid as uuidlib

from pyVmomi import vim, vmodl

from vcblab import history
from vcblab.methods import method
from vcblab.methods.properties import _own

QUERY_MAX = 1000  # QueryEvents answers at most this many events (newest first)


def _count(value, name: str, *, allow_zero: bool = False) -> int:
    if value is None or value < (0 if allow_zero else 1) or value > history.MAX_PAGE:
        raise vmodl.fault.InvalidArgument(
            msg=f"A specified parameter was not correct: {name}", invalidProperty=name
        )
    return int(value)


@method("QueryEvents")
def query_events(call, this, filter, eventViewSpec=None):
    match = history.event_matcher(call.lab, filter)
    limit = filter.maxCount if filter is not None and filter.maxCount else QUERY_MAX
    hits = [e for e in reversed(call.lab.events.all()) if match(e)]
    return vim.event.Event.Array(hits[: _count(limit, "maxCount")])


def _new_collector(call, kind, spec, source, match, view):
    mine = [
        o
        for o in list(call.lab.objects.values())
        if isinstance(o, history.HistoryCollector) and o.session is call.session
    ]
    if len(mine) >= history.MAX_COLLECTORS:
        raise vim.fault.InvalidState(msg="Too many history collectors in this session.")
    moref = f"session[{call.session.key[:8]}]{uuidlib.uuid4()}"
    collector = kind(call.lab, moref, call.session, spec, source, match, view)
    if spec is not None and getattr(spec, "maxCount", None):
        collector.page_size = _count(spec.maxCount, "maxCount")
    return call.lab.add(collector).ref()


@method("CreateCollectorForEvents")
def create_collector_for_events(call, this, filter):
    lab = call.lab
    return _new_collector(
        call,
        history.EventCollector,
        filter,
        lab.events.all,
        history.event_matcher(lab, filter),
        lambda e: e,
    )


@method("CreateCollectorForTasks")
def create_collector_for_tasks(call, this, filter):
    lab = call.lab
    return _new_collector(
        call,
        history.TaskCollector,
        filter,
        lambda: history.all_tasks(lab),
        history.task_matcher(lab, filter),
        lambda t: t.info,
    )


@method("ReadNextEvents", "ReadNextTasks")
def read_next(call, this, maxCount):
    _own(call, this)
    return this.read_next(_count(maxCount, "maxCount"))


@method("ReadPreviousEvents", "ReadPreviousTasks")
def read_previous(call, this, maxCount):
    _own(call, this)
    return this.read_previous(_count(maxCount, "maxCount"))


@method("SetCollectorPageSize")
def set_page_size(call, this, maxCount):
    _own(call, this)
    this.page_size = _count(maxCount, "maxCount", allow_zero=True)


@method("ResetCollector")
def reset_collector(call, this):
    _own(call, this)
    this.position = None


@method("RewindCollector")
def rewind_collector(call, this):
    _own(call, this)
    this.position = 0


@method("DestroyCollector")
def destroy_collector(call, this):
    _own(call, this)
    call.lab.remove(this.moref)
