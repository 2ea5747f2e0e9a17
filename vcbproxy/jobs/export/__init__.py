"""Full-VM export, what ``vcbMounter -t fullvm`` did: one module per step, the way
virtnbdbackup splits its ``backup`` package.

* this module: :func:`export`, the VMs a selector names, one after the other or ``--jobs`` at once;
* :mod:`.vm`: one VM: lock, directory, hooks, snapshot, copy, self-description;
* :mod:`.disk`: one disk, through the transport's view of the snapshot's disks;
* :mod:`.options`: what is asked (:class:`ExportOptions`) and what came of it;
* :mod:`.runlog`: the run's log beside the data.

The export directory's files and ``vcbproxy.json`` are described in docs/formats.md.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from vcbproxy import errors
from vcbproxy.jobs.export.options import ExportOptions, VmExportResult
from vcbproxy.jobs.export.vm import export_vm
from vcbproxy.jobs.inventory import MULTI_VM_KINDS, find_vms, resolve_vm
from vcbproxy.models import VmRef
from vcbproxy.progress import Progress
from vcbproxy.selectors import Selector
from vcbproxy.staging import names

__all__ = ["ExportOptions", "VmExportResult", "export", "export_vm"]


def export(
    session, selector: Selector, options: ExportOptions, progress: Progress
) -> list[VmExportResult]:
    """Export every VM the selector names; one VM straight into DIR, several into DIR/<vm>-fullVM."""
    plan: list[tuple[VmRef, Path]]
    if selector.kind in MULTI_VM_KINDS:
        vms = find_vms(session, selector)
        if not vms:
            raise errors.NotFoundError(
                f"no VM matches {selector.kind}:{selector.value}".rstrip(":")
            )
        options.target.mkdir(parents=True, exist_ok=True)
        taken: set[str] = set()
        plan = []
        for vm in vms:
            dirname = names.unique(names.export_dir_name(vm.name), taken)
            taken.add(dirname)
            plan.append((vm, options.target / dirname))
    else:
        plan = [(resolve_vm(session, selector), options.target)]

    if len(plan) == 1 and selector.kind not in MULTI_VM_KINDS:
        # One VM: its error is the command's error, raised as is.
        vm, directory = plan[0]
        return [export_vm(session, vm, directory, options, progress)]

    # Set when the command is interrupted: exports running in worker threads (--jobs) stop at
    # their next chunk and clean up, queued ones never start.
    cancel = threading.Event()

    def one(item: tuple[VmRef, Path]) -> VmExportResult:
        vm, directory = item
        try:
            return export_vm(session, vm, directory, options, progress, cancel=cancel)
        except errors.VcbProxyError as exc:  # not Interrupted: a BaseException, it stops them all
            return VmExportResult(vm, directory, error=exc)

    if options.jobs <= 1:
        # In the main thread, so signals turn into exceptions right where the copy runs.
        return [one(item) for item in plan]
    with ThreadPoolExecutor(max_workers=options.jobs, thread_name_prefix="export") as pool:
        futures = [pool.submit(one, item) for item in plan]
        try:
            return [f.result() for f in futures]
        except BaseException:
            # Ctrl-C/SIGTERM arrive in this (main) thread: stop the workers, start no more.
            cancel.set()
            for f in futures:
                f.cancel()
            raise
