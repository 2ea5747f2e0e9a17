"""Shared by the vSphere client tests: one vcbproxy Session per test on the endpoint under test."""

from __future__ import annotations

import pytest

from vcbproxy.models import ServerSpec
from vcbproxy.vsphere.session import Session


@pytest.fixture
def session(vsphere_endpoint):
    ep = vsphere_endpoint
    with Session.connect(
        ServerSpec(
            server=ep.server, user=ep.user, password=ep.password, ca_file=ep.cert_file, timeout=20
        )
    ) as s:
        yield s
