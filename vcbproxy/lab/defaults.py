"""The default VMs of the lab (deterministic from the seed). Filled in step 3."""


def populate(lab, *, extra_vms: int = 0, disk_size: int = 64 << 20) -> None:
    pass
