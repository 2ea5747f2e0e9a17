"""The run's log inside the export directory, beside the data (virtnbdbackup-style)."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

from vcbproxy.lines import OneLineFormatter
from vcbproxy.models import VmRef

RUN_LOG = "vcbproxy.log"


class _StagingFileHandler(logging.FileHandler):
    """A file handler that goes quiet when its file cannot be written (a full staging disk).

    logging's default prints "--- Logging error ---" and a traceback on stderr for each
    record it cannot write; the export fails with its own one-line error then, and the
    file (inside the export directory) is removed with it."""

    failed = False

    def emit(self, record: logging.LogRecord) -> None:
        if not self.failed:
            super().emit(record)

    def handleError(self, record: logging.LogRecord) -> None:  # noqa: N802 (logging's name)
        if isinstance(sys.exc_info()[1], OSError):
            self.failed = True
        else:
            super().handleError(record)  # a bad log call is a bug: let logging say so


class RunLog:
    """Copies vcbproxy's log records of one VM's export into ``path`` until :meth:`close`."""

    def __init__(self, path: Path, vm: VmRef):
        self.handler = _StagingFileHandler(path, encoding="utf-8")
        self.handler.setLevel(logging.DEBUG)
        self.handler.setFormatter(
            OneLineFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
        )
        vm_name = vm.name

        class OnlyThisJob(logging.Filter):
            # With --jobs N several exports log at once; keep each VM's lines in its own file.
            def filter(self, record):
                return getattr(record, "vm", vm_name) == vm_name

        self.handler.addFilter(OnlyThisJob())
        self.logger = logging.getLogger("vcbproxy")
        self.logger.addHandler(self.handler)
        # The file wants INFO even when the terminal shows only warnings: lower the logger
        # (the terminal's handler keeps -v's level), but never raise it, so -vv keeps its
        # debug lines (and the traceback of an error) on the terminal.
        # Not restored on close: with --jobs N another VM's run log may still need INFO.
        if self.logger.getEffectiveLevel() > logging.INFO:
            self.logger.setLevel(logging.INFO)

    def close(self) -> None:
        self.logger.removeHandler(self.handler)
        self.handler.close()
