"""Fixtures live in tests/fixtures/, one module per peer (lab, vcsim, sshd, ...)."""

import os
import shutil
import tempfile

pytest_plugins: list[str] = [
    "tests.fixtures.sshd",
    "tests.fixtures.lab",
    "tests.fixtures.vcsim",
    "tests.fixtures.govmomi",
    "tests.fixtures.endpoints",
    "tests.fixtures.bacula",
    "tests.fixtures.tools",
    "tests.fixtures.redis",
]


def pytest_configure(config):
    # Per-VM locks of this run in a directory of its own: several suites run at once on one
    # machine (CI, other worktrees), and vcsim gives every instance the same vCenter and VM
    # UUIDs, which is what the locks are keyed by (vcbproxy/jobs/locks.py).
    if "VCBPROXY_LOCK_DIR" not in os.environ:
        os.environ["VCBPROXY_LOCK_DIR"] = _LOCKS.setdefault(
            "dir", tempfile.mkdtemp(prefix="vcbproxy-locks-")
        )


def pytest_unconfigure(config):
    if "dir" in _LOCKS:
        shutil.rmtree(_LOCKS.pop("dir"), ignore_errors=True)
        os.environ.pop("VCBPROXY_LOCK_DIR", None)


_LOCKS: dict[str, str] = {}
