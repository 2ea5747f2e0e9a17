"""Fixtures for end-to-end tests: the CLI run as a process against the lab."""

from __future__ import annotations

import pytest

from tests.e2e.cli import cli_env


@pytest.fixture(scope="session")
def lab_client(lab):
    from vcblab.client import LabClient

    return LabClient(lab.info)


@pytest.fixture
def env(lab, lab_client):
    """CLI environment for the shared lab; fault switches are cleared after each test."""
    yield cli_env(lab.info)
    lab_client.set_faults(
        drop_after_bytes=None,
        throttle_bps=None,
        fail_next_snapshot_create=False,
        fail_next_snapshot_remove=False,
        fail_quiesce=False,
        task_delay=0.0,
        drop_count=1,
        cbt_page_bytes=None,
        cbt_max_areas=2048,
        reset_cbt=None,
    )


@pytest.fixture
def lab_sshd(sshd, lab):
    """The session's sshd serving every lab datastore under its volumes root."""
    sshd.expose_all(lab.info["datastores"])
    return sshd
