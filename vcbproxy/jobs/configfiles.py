"""Copying a VM's small files (.vmx, .nvram, logs) as they were at the snapshot.

Shared by the full export and the CBT backup; the ``.vmx`` is staged as ``<name>.orig`` so
that the export can rewrite it to name the exported disks.
"""

from __future__ import annotations

import posixpath
from pathlib import Path
from typing import Protocol

from vcbproxy.models import DatastoreFile
from vcbproxy.staging import names
from vcbproxy.staging.atomic import AtomicFile
from vcbproxy.transport import Transport


class Sink(Protocol):
    """Where staged files go: an export directory, or a CBT run's ``config/``."""

    def file(self, name: str) -> Path: ...


def copy_config_files(
    transport: Transport, files: list[DatastoreFile], sink: Sink
) -> dict[str, str]:
    """Copy .vmx, .nvram and logs; returns {staged name: kind}. The .vmx is held for rewriting."""
    staged: dict[str, str] = {}
    taken: set[str] = set()
    for f in files:
        name = names.unique(names.safe_component(posixpath.basename(f.location.path)), taken)
        taken.add(name)
        source = transport.open(file=f.location)
        try:
            target = sink.file(name + ".orig" if f.kind == "config" else name)
            with AtomicFile(target) as out:
                for chunk in source.stream(0, source.size):
                    out.write(chunk)
        finally:
            source.close()
        staged[name] = f.kind
    return staged
