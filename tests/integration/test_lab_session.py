"""Sessions as vSphere keeps them: InvalidLogin, cookie on every call, NotAuthenticated."""

from __future__ import annotations

import ssl
import time

import pytest
from pyVim.connect import SmartConnect
from pyVmomi import vim

from tests.fixtures.lab import connect
from vcblab.client import LabClient


def test_wrong_password_is_invalid_login(lab):
    with pytest.raises(vim.fault.InvalidLogin):
        connect(lab, password="not-the-password")


def test_unknown_user_is_invalid_login(lab):
    ctx = ssl.create_default_context(cafile=lab.info["cert_file"])
    with pytest.raises(vim.fault.InvalidLogin):
        SmartConnect(
            host="127.0.0.1",
            port=lab.info["https_port"],
            user="root",
            pwd=lab.password,
            sslContext=ctx,
        )


def test_untrusted_certificate_is_refused(lab):
    with pytest.raises(ssl.SSLError):
        SmartConnect(
            host="127.0.0.1",
            port=lab.info["https_port"],
            user=lab.info["user"],
            pwd=lab.password,
            sslContext=ssl.create_default_context(),
        )


def test_service_content_and_cookie(lab):
    si = connect(lab)
    about = si.content.about
    assert (about.apiVersion, about.apiType) == ("8.0.3.0", "VirtualCenter")
    assert 'vmware_soap_session="' in si._stub.cookie
    session = si.content.sessionManager.currentSession
    assert session.userName == lab.info["user"]
    si.content.sessionManager.Logout()
    with pytest.raises(vim.fault.NotAuthenticated):
        si.content.rootFolder.childEntity  # noqa: B018 (a property read is a SOAP call)


def test_expire_sessions_switch(fresh_lab):
    si = connect(fresh_lab)
    assert si.content.rootFolder.childEntity[0].name == "lab-dc"
    LabClient(fresh_lab.info).set_faults(expire_sessions=True)
    with pytest.raises(vim.fault.NotAuthenticated):
        si.content.rootFolder.childEntity  # noqa: B018
    # A new login works: the switch is one-shot.
    assert connect(fresh_lab).content.rootFolder.childEntity[0].name == "lab-dc"


def test_idle_session_times_out(fresh_lab):
    si = connect(fresh_lab)
    LabClient(fresh_lab.info).set_faults(session_timeout=0.5)
    time.sleep(0.8)
    with pytest.raises(vim.fault.NotAuthenticated):
        si.content.rootFolder.childEntity  # noqa: B018
