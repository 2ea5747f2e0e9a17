"""Helpers for building pyVmomi data objects on the server side."""

from __future__ import annotations

import datetime

from pyVmomi import VmomiSupport

_EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.UTC)


def complete(obj):
    """Give every unset required scalar field of a data object a neutral value.

    pyVmomi's serialiser refuses an object with an unset non-optional field; vSphere fills
    dozens of booleans (capabilities, flags) the lab has no opinion about, so they read False/0.
    """
    for prop in obj._GetPropertyList():
        if prop.flags & VmomiSupport.F_OPTIONAL or getattr(obj, prop.name) is not None:
            continue
        t = prop.type
        if t is bool:
            setattr(obj, prop.name, False)
        elif issubclass(t, int) and not issubclass(t, bool):
            setattr(obj, prop.name, 0)
        elif issubclass(t, float):
            setattr(obj, prop.name, 0.0)
        elif issubclass(t, VmomiSupport.Enum):
            setattr(obj, prop.name, t.values[0] if hasattr(t, "values") else "")
        elif issubclass(t, str):
            setattr(obj, prop.name, "")
        elif t is datetime.datetime:
            setattr(obj, prop.name, _EPOCH)
        elif issubclass(t, list):
            setattr(obj, prop.name, t())
    return obj


def now():
    return datetime.datetime.now(datetime.UTC)
