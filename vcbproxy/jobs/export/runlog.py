"""The run's log inside the export directory, beside the data (virtnbdbackup-style)."""

from __future__ import annotations

import logging
from pathlib import Path

from vcbproxy.models import VmRef

RUN_LOG = "vcbproxy.log"


class RunLog:
    """Copies vcbproxy's log records of one VM's export into ``path`` until :meth:`close`."""

    def __init__(self, path: Path, vm: VmRef):
        self.handler = logging.FileHandler(path, encoding="utf-8")
        self.handler.setLevel(logging.DEBUG)
        self.handler.setFormatter(
            logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
        )
        vm_name = vm.name

        class OnlyThisJob(logging.Filter):
            # With --jobs N several exports log at once; keep each VM's lines in its own file.
            def filter(self, record):
                return getattr(record, "vm", vm_name) == vm_name

        self.handler.addFilter(OnlyThisJob())
        self.logger = logging.getLogger("vcbproxy")
        self.logger.addHandler(self.handler)
        if self.logger.level == logging.NOTSET or self.logger.level > logging.INFO:
            self.logger.setLevel(logging.INFO)

    def close(self) -> None:
        self.logger.removeHandler(self.handler)
        self.handler.close()
