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
    """CLI environment for the shared lab; every fault switch is back at its default after each test."""
    yield cli_env(lab.info)
    lab_client.reset_faults()


@pytest.fixture
def lab_sshd(sshd, lab):
    """The session's sshd serving every lab datastore under its volumes root."""
    sshd.expose_all(lab.info["datastores"])
    return sshd
