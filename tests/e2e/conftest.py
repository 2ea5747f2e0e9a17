"""Fixtures for end-to-end tests: the CLI run as a process against the lab."""

from __future__ import annotations

import signal

import pytest

from tests.e2e.cli import cli_env


@pytest.fixture(scope="session")
def lab_client(lab):
    from vcblab.client import LabClient

    return LabClient(lab.info)


@pytest.fixture
def env(lab, lab_client):
    """CLI environment for the shared lab; every fault switch is back at its default after each test."""
    yield cli_env(lab.info)
    lab_client.reset_faults()


@pytest.fixture
def lab_sshd(sshd, lab):
    """The session's sshd serving every lab datastore under its volumes root."""
    sshd.expose_all(lab.info["datastores"])
    return sshd


@pytest.fixture
def stopped_after():
    """``stopped_after(proc)``: a job a test started is stopped with SIGTERM (so its own
    cleanup runs) if it still runs when the test ends, failed or not: a failed test leaves no
    running job and no snapshot to the next one."""
    procs = []

    def track(proc):
        procs.append(proc)
        return proc

    yield track
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            proc.communicate(timeout=120)
