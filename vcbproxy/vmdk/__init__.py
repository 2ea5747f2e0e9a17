"""VMDK support: descriptors, hosted sparse extents, disk chains, writers, streamOptimized.

Written from the "Virtual Disk Format 5.0" specification; ``qemu-img`` is the test oracle.
Nothing here talks to vSphere: files arrive as :class:`RandomAccess` objects from a transport
(or :func:`vcbproxy.vmdk.io.local_opener` for local files).
"""

from __future__ import annotations


class VmdkError(ValueError):
    """A VMDK file that we cannot understand or refuse to handle (message names the problem).

    A ``ValueError`` so that callers that treat malformed input generically keep working.
    """


__all__ = ["VmdkError"]
