"""The vSphere client: the only package (with vcblab) that imports pyVmomi.

Everything leaving this package is a vcbproxy dataclass (VmRef, DiskInfo, SnapshotRef, ...)
or a vcbproxy error; pyVmomi faults are translated at this boundary.
"""
