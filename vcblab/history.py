"""TaskManager and EventManager objects, and the history collectors they create.

A history collector (vim.TaskHistoryCollector, vim.event.EventHistoryCollector) is a
session's filtered, scrollable view of the lab's tasks or events:

- ``latestPage``: the newest ``pageSize`` matching items (10 unless set), newest first;
- ``ReadNext*``/``ReadPrevious*`` scroll from a position that starts just before the
  latest page (``ResetCollector``) and can go back to the oldest item (``RewindCollector``);
  both return items oldest first and move the position past what they returned.
"""

from __future__ import annotations

from pyVmomi import VmomiSupport, vim, vmodl

from vcblab.model import LabObject

DEFAULT_PAGE = 10
MAX_PAGE = 1000  # vCenter's limit of a page and of one read
MAX_COLLECTORS = 32  # per session, as vCenter's maxCollector


def _entities_under(lab, ref, recursion: str) -> set[str]:
    """Morefs an entity filter selects: the entity, its children, or its whole subtree."""
    from vcblab.inventory import Entity

    root = lab.obj(ref._moId)
    if not isinstance(root, Entity):
        raise vmodl.fault.ManagedObjectNotFound(msg=f"no entity {ref._moId}", obj=ref)
    if root is lab.root_folder and recursion in ("self", "all"):
        return set()  # the root folder stands for everything (empty: no restriction)
    out = {root.moref} if recursion in ("self", "all") else set()
    if recursion in ("children", "all"):
        stack = list(root.children())
        while stack:
            node = stack.pop()
            out.add(node.moref)
            if recursion == "all":
                stack.extend(node.children())
    return out


def _event_entities(event) -> set[str]:
    out = set()
    for arg, attr in (
        ("vm", "vm"),
        ("host", "host"),
        ("computeResource", "computeResource"),
        ("datacenter", "datacenter"),
        ("ds", "datastore"),
        ("net", "network"),
    ):
        value = getattr(event, arg, None)
        ref = getattr(value, attr, None) if value is not None else None
        if ref is not None:
            out.add(ref._moId)
    return out


def _type_matches(item, names) -> bool:
    for name in names or []:
        try:
            t = VmomiSupport.GetWsdlType("urn:vim25", name)
        except KeyError:
            continue
        if isinstance(item, t):
            return True
    return False


def event_matcher(lab, spec):
    """A predicate for EventFilterSpec: entity (with recursion), time, user, chain, types."""
    spec = spec or vim.event.EventFilterSpec()
    entities = None
    if spec.entity is not None:
        entities = _entities_under(lab, spec.entity.entity, spec.entity.recursion or "all")
    times = spec.time
    users = spec.userName
    type_ids = list(spec.eventTypeId or []) + [t._wsdlName for t in spec.type or []]

    def match(event) -> bool:
        if entities and not (_event_entities(event) & entities):
            return False
        if times is not None:
            if times.beginTime and event.createdTime < times.beginTime:
                return False
            if times.endTime and event.createdTime > times.endTime:
                return False
        if users is not None:
            wanted = set(users.userList or [])
            system = bool(users.systemUser) and not event.userName
            if not system and event.userName not in wanted:
                return False
        if spec.eventChainId is not None and event.chainId != spec.eventChainId:
            return False
        return not type_ids or _type_matches(event, type_ids)

    return match


def task_matcher(lab, spec):
    """A predicate for TaskFilterSpec over LabTasks: entity, state, user, chain, time."""
    spec = spec or vim.TaskFilterSpec()
    entities = None
    if spec.entity is not None:
        entities = _entities_under(lab, spec.entity.entity, spec.entity.recursion or "all")
    states = set(spec.state or [])
    chains = set(spec.eventChainId or [])
    users = spec.userName
    times = spec.time

    def match(task) -> bool:
        info = task.info
        if entities:
            entity = getattr(task.entity, "vm", task.entity)  # a snapshot's task is its VM's
            if entity is None or entity.moref not in entities:
                return False
        if states and info.state not in states:
            return False
        if chains and info.eventChainId not in chains:
            return False
        if users is not None:
            user = getattr(info.reason, "userName", "")
            if user not in set(users.userList or []) and not (users.systemUser and not user):
                return False
        if times is not None:
            stamp = {
                "queuedTime": info.queueTime,
                "startedTime": info.startTime,
                "completedTime": info.completeTime,
            }.get(times.timeType or "queuedTime")
            if stamp is None:
                return False
            if times.beginTime and stamp < times.beginTime:
                return False
            if times.endTime and stamp > times.endTime:
                return False
        return True

    return match


def all_tasks(lab) -> list:
    """Every task the lab has run, oldest first."""
    from vcblab.tasks import LabTask

    tasks = [o for o in list(lab.objects.values()) if isinstance(o, LabTask)]
    return sorted(tasks, key=lambda t: t.info.eventChainId)


class HistoryCollector(LabObject):
    """One session's collector; ``items()`` gives the matching history, oldest first."""

    def __init__(self, lab, moref, session, spec, source, match, view):
        super().__init__(lab, moref)
        self.session = session
        self.spec = spec
        self._source = source  # () -> every item, oldest first
        self._match = match
        self._view = view  # item -> what the wire carries (TaskInfo for a task)
        self.page_size = DEFAULT_PAGE
        self.position: int | None = None  # None: just before the latest page

    def items(self) -> list:
        return [self._view(i) for i in self._source() if self._match(i)]

    def p_filter(self):
        return self.spec

    def p_latestPage(self):
        page = self.items()[-self.page_size :]
        return list(reversed(page)) or None

    def _position(self, items) -> int:
        if self.position is None:
            return max(0, len(items) - self.page_size)
        return min(self.position, len(items))

    def read_next(self, count: int) -> list:
        items = self.items()
        start = self._position(items)
        out = items[start : start + count]
        self.position = start + len(out)
        return out

    def read_previous(self, count: int) -> list:
        items = self.items()
        end = self._position(items)
        start = max(0, end - count)
        self.position = start
        return items[start:end]


class TaskCollector(HistoryCollector):
    vim_type = vim.TaskHistoryCollector


class EventCollector(HistoryCollector):
    vim_type = vim.event.EventHistoryCollector

    def p_initialized(self):
        return True


class EventManager(LabObject):
    vim_type = vim.event.EventManager

    def p_latestEvent(self):
        return self.lab.events.latest()

    def p_maxCollector(self):
        return MAX_COLLECTORS

    def p_description(self):
        kinds = (
            "UserLoginSessionEvent",
            "UserLogoutSessionEvent",
            "TaskEvent",
            "VmPoweredOnEvent",
            "VmPoweredOffEvent",
            "VmReconfiguredEvent",
            "VmRegisteredEvent",
            "VmRemovedEvent",
        )
        return vim.event.EventDescription(
            category=[
                vim.ElementDescription(key=k, label=k.capitalize(), summary=k.capitalize())
                for k in ("info", "warning", "error", "user")
            ],
            eventInfo=[
                vim.event.EventDescription.EventDetail(
                    key=k,
                    category="info",
                    description=k,
                    formatOnVm="",
                    formatOnHost="",
                    formatOnComputeResource="",
                    formatOnDatacenter="",
                    fullFormat="",
                )
                for k in kinds
            ],
        )


class TaskManager(LabObject):
    vim_type = vim.TaskManager
    RECENT = 200  # vCenter's recentTask keeps about this many

    def p_recentTask(self):
        return [t.ref() for t in all_tasks(self.lab)[-self.RECENT :]] or None

    def p_maxCollector(self):
        return MAX_COLLECTORS
