"""vim.HttpNfcLease: an export of a VM's (or a snapshot's) disks, served by nfc.py."""

from __future__ import annotations

from pyVmomi import vim

from vcblab.model import LabObject, LeaseState


class LabLease(LabObject):
    vim_type = vim.HttpNfcLease

    def __init__(self, lab, moref: str, vm, state: LeaseState):
        super().__init__(lab, moref)
        self.vm, self.lease = vm, state

    def _state(self) -> str:
        self.lease.expired()  # turns a lease without progress calls into an error
        return self.lease.state

    def p_state(self):
        return self._state()

    def p_error(self):
        return self.lease.error if self._state() == "error" else None

    def p_initializeProgress(self):
        return 100

    def p_transferProgress(self):
        return self.lease.progress

    def p_mode(self):
        return "pull"

    def p_info(self):
        if self._state() != "ready":
            return None
        thumb = getattr(self.lab, "thumbprint_sha1", None)
        urls = []
        for n, key in enumerate(sorted(self.lease.disks)):
            disk, _mark = self.lease.disks[key]
            slot = self.vm.slots[key]
            urls.append(
                vim.HttpNfcLease.DeviceUrl(
                    key=f"/{self.vm.moref}/VirtualLsiLogicController0:{slot.unit}",
                    importKey=f"/{self.vm.name}/VirtualLsiLogicController0:{slot.unit}",
                    url=f"https://*/nfc/{self.lease.id}/{key}.vmdk",
                    sslThumbprint=thumb or "",
                    disk=True,
                    targetId=f"disk-{n}.vmdk",
                    # No fileSize: the API reserves it for non-disk files; a disk's stream
                    # size is unknown before it is made (clients use totalDiskCapacityInKB).
                )
            )
        total = sum(d.capacity for d, _ in self.lease.disks.values()) // 1024
        return vim.HttpNfcLease.Info(
            lease=self.ref(),
            entity=self.vm.ref(),
            deviceUrl=urls,
            totalDiskCapacityInKB=total,
            leaseTimeout=int(self.lease.timeout),
        )


def open_lease(lab, vm, marks: dict, task=None) -> LabLease:
    """A ready lease over `vm`'s disks at the given oracle marks (None = current content);
    `task` (the export's LabTask) ends when the lease does."""
    moref = lab.next_moref("lease")
    state = LeaseState(
        id=moref,
        vm_moref=vm.moref,
        disks={key: (vm.disks[key], mark) for key, mark in marks.items()},
        timeout=float(lab.faults.get("lease_timeout")),
        task=task,
    )
    lease = LabLease(lab, moref, vm, state)
    lab.leases[moref] = state
    lab.add(lease)
    return lease
