"""The backup snapshot's life around a copy, shared by the full export, the CBT backup and
``cbt enable``'s stun cycle: :class:`JobSnapshot` takes it and removes it on every path, and
:func:`handle_stale_snapshots` deals with one an earlier run left.

``options`` is the job's options (:class:`SnapshotOptions`).
"""

from __future__ import annotations

import logging
import time
from typing import Protocol

from vcbproxy import __version__, errors
from vcbproxy.jobs import ownership
from vcbproxy.jobs.signals import shielded
from vcbproxy.models import SnapshotRef, VmRef

log = logging.getLogger(__name__)

# VCB's name for the snapshot a backup takes; sweeps and unmount look for it.
VCB_SNAPSHOT = "_VCB-BACKUP_"


class SnapshotOptions(Protocol):
    """What the export's and the backup's options say about the snapshot."""

    quiesce: bool | None  # None: quiesce when VMware Tools runs
    snapshot_timeout: float
    preexisting_snapshot: str  # "fail" or "delete" a _VCB-BACKUP_ snapshot already there


def handle_stale_snapshots(session, vm: VmRef, options: SnapshotOptions) -> None:
    """A _VCB-BACKUP_ snapshot already on the VM: fail, or remove it
    (``options.preexisting_snapshot``) - but only one whose owner is provably gone
    (:mod:`vcbproxy.jobs.ownership`); one that may still be in use fails the job either way."""
    from vcbproxy.vsphere import snapshots  # pyVmomi: loaded only when a job talks to a server

    stale = snapshots.find_snapshots_named(session, vm, VCB_SNAPSHOT)
    if not stale:
        return
    if options.preexisting_snapshot != "delete":
        raise errors.SnapshotError(
            f"{vm.name} already has a {VCB_SNAPSHOT} snapshot ({', '.join(s.moref for s in stale)}), "
            f"left by an earlier run; remove it with --preexisting-snapshot delete or 'vcbproxy snapshot sweep'"
        )
    verdicts = [(snap, ownership.may_remove_snapshot(snap)) for snap in stale]
    kept = [(snap, v) for snap, v in verdicts if not v.removable]
    if kept:
        snap, verdict = kept[0]
        raise errors.SnapshotError(
            f"{vm.name} already has a {VCB_SNAPSHOT} snapshot {snap.moref} that is not ours to "
            f"remove: {verdict.why}; 'vcbproxy snapshot delete' removes it if you know it is stale"
        )
    for snap, verdict in verdicts:
        log.warning(
            "removing pre-existing %s snapshot %s of %s: %s",
            VCB_SNAPSHOT,
            snap.moref,
            vm.name,
            verdict.why,
        )
        snapshots.remove_snapshot(session, snap.moref, timeout=options.snapshot_timeout)


class JobSnapshot:
    """The snapshot one job takes, from the moment its create task starts until its removal
    task has finished; ``with JobSnapshot(...) as snap: snap.take(...) ... snap.remove(...)``.

    Whatever stops the job - an error, Ctrl-C, SIGTERM, a cancelled ``--jobs`` worker - the
    exit of the ``with`` leaves no snapshot of the job behind: a create or remove task still
    running on the server is waited for (up to ``timeout``: vSphere cannot be relied on to
    cancel either), and a snapshot it made is removed. The SOAP calls that start a task run
    with SIGINT/SIGTERM held back, so no task is ever started without the job knowing its
    ID. If the snapshot cannot be removed, the job's one-line error says which one stays.
    """

    def __init__(
        self,
        session,
        vm: VmRef,
        *,
        description: str,
        timeout: float,
        name: str = VCB_SNAPSHOT,
        owner: ownership.Owner | None = None,
    ):
        self.session, self.vm, self.name = session, vm, name
        # The job the snapshot belongs to, recorded in its description so that no other
        # command removes it while the job runs (jobs/ownership.py).
        self.owner = owner
        self.description, self.timeout = description, timeout
        self.snapshot: SnapshotRef | None = None
        self._create_task: str | None = None
        self._remove_task: str | None = None

    @classmethod
    def backup(
        cls,
        session,
        vm: VmRef,
        options: SnapshotOptions,
        purpose: str,
        owner: ownership.Owner,
    ) -> JobSnapshot:
        """The ``_VCB-BACKUP_`` snapshot of an export or a CBT backup, owned by ``owner``
        (take it with :meth:`take_backup`)."""
        return cls(
            session,
            vm,
            description=f"vcbproxy {__version__} {purpose}; {owner.tag()}",
            timeout=options.snapshot_timeout,
            owner=owner,
        )

    def take_backup(self, options: SnapshotOptions) -> SnapshotRef:
        """The backup snapshot: no memory, quiesced as the options say."""
        return self.take(
            quiesce=self.vm.tools_running if options.quiesce is None else options.quiesce
        )

    def take(self, *, quiesce: bool, memory: bool = False) -> SnapshotRef:
        from vcbproxy.vsphere import snapshots  # pyVmomi: loaded only when a job talks to a server

        with shielded():
            self._create_task = snapshots.start_create(
                self.session,
                self.vm,
                self.name,
                description=self.description,
                memory=memory,
                quiesce=quiesce,
            )
        self.snapshot = self._finish_create(quiesce)
        log.info("snapshot %s (%s) taken, quiesce=%s", self.snapshot.moref, self.name, quiesce)
        return self.snapshot

    def remove(self, outcome: errors.Outcome | None = None) -> None:
        """Remove the snapshot once the data is safe; one retry, as a removal task can fail
        transiently (a busy host, a consolidation already running)."""
        if self.snapshot is None:
            return
        try:
            self._remove()
        except errors.SnapshotError as exc:
            message = f"removing snapshot {self.snapshot.moref} failed ({exc}); retried"
            if outcome is not None:
                outcome.warn(message, log)
            else:
                log.warning("%s", message)
            time.sleep(1.0)
            self._remove()

    def __enter__(self) -> JobSnapshot:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        left = self.release()
        if left and exc is not None:
            errors.amend(exc, left)

    def release(self) -> str:
        """After a failure: finish what is in flight and remove what was made. Returns ""
        when no snapshot of the job stays, else a sentence naming the one that does."""
        # Shielded: a second Ctrl-C while a task runs must not leave the snapshot behind.
        with shielded():
            try:
                self._settle()
                if self.snapshot is not None:
                    self._remove()
                    log.info("snapshot %s removed after failure", self._removed)
            except errors.VcbProxyError as exc:
                what = self.snapshot.moref if self.snapshot else f"made by task {self._create_task}"
                left = (
                    f"could not remove snapshot {what} of {self.vm.name} ({exc}); it stays on "
                    f"the VM until 'vcbproxy snapshot sweep' removes it"
                )
                log.error("%s", left)
                return left
        return ""

    # -- the steps ------------------------------------------------------------------------

    _removed = ""

    def _finish_create(self, quiesce: bool) -> SnapshotRef:
        from vcbproxy.vsphere import snapshots  # pyVmomi: only when talking to a server

        assert self._create_task is not None
        snapshot = snapshots.finish_create(
            self.session,
            self.vm,
            self._create_task,
            name=self.name,
            description=self.description,
            quiesce=quiesce,
            timeout=self.timeout,
        )
        self._create_task = None
        return snapshot

    def _settle(self) -> None:
        """Wait for a task the job was stopped in the middle of."""
        if self._create_task is not None:
            log.info(
                "waiting for snapshot task %s of %s to finish", self._create_task, self.vm.name
            )
            try:
                self.snapshot = self._finish_create(quiesce=False)
            except errors.SnapshotError as exc:
                if exc.__cause__ is None:
                    raise  # no answer in time: the task may still make the snapshot
                # The task failed on the server (its fault is the cause): nothing was made.
                log.info("the snapshot task failed: nothing to remove (%s)", exc)
                self._create_task = None
        if self._remove_task is not None and self.snapshot is not None:
            from vcbproxy.vsphere import snapshots  # pyVmomi: only when talking to a server

            log.info("waiting for removal task %s of %s to finish", self._remove_task, self.vm.name)
            try:
                snapshots.finish_remove(
                    self.session, self.snapshot.moref, self._remove_task, timeout=self.timeout
                )
                self._removed, self.snapshot = self.snapshot.moref, None
            except errors.SnapshotError as exc:
                log.warning("removal task %s failed (%s); removing again", self._remove_task, exc)
            self._remove_task = None

    def _remove(self) -> None:
        from vcbproxy.vsphere import snapshots  # pyVmomi: loaded only when a job talks to a server

        assert self.snapshot is not None
        moref = self.snapshot.moref
        try:
            with shielded():
                self._remove_task = snapshots.start_remove(self.session, moref)
        except errors.NotFoundError:
            # Gone already: someone removed it by hand (or a second removal raced ours).
            log.warning("snapshot %s of %s was already removed", moref, self.vm.name)
            self._removed, self.snapshot = moref, None
            return
        snapshots.finish_remove(self.session, moref, self._remove_task, timeout=self.timeout)
        self._remove_task = None
        self._removed, self.snapshot = moref, None
        log.info("snapshot %s removed", moref)
