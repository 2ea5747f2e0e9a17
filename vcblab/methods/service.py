"""ServiceInstance and SessionManager: the calls before and around a session."""

from __future__ import annotations

import datetime

from pyVmomi import vim

from vcblab import soap
from vcblab.methods import method


@method("RetrieveServiceContent")
def retrieve_service_content(call, this):
    return call.lab.service_instance.get("content")


@method("CurrentTime")
def current_time(call, this):
    return datetime.datetime.now(datetime.UTC)


@method("Login")
def login(call, this, userName, password, locale=None):
    session = call.lab.login(userName or "", password or "")
    if session is None:
        raise vim.fault.InvalidLogin(
            msg="Cannot complete login due to an incorrect user name or password."
        )
    call.new_cookie = session.key
    return session.user_session()


@method("Logout")
def logout(call, this):
    call.lab.logout(call.session)


@method("SessionIsActive")
def session_is_active(call, this, sessionID, userName):
    return call.lab.session(sessionID) is not None


def about():
    return vim.AboutInfo(
        name="VMware vCenter Server (vcbproxy lab)",
        fullName="VMware vCenter Server 8.0.3 build-24022515 (vcbproxy lab)",
        vendor="VMware, Inc.",
        version="8.0.3",
        build="24022515",
        localeVersion="INTL",
        localeBuild="000",
        osType="linux-x64",
        productLineId="vpx",
        apiType="VirtualCenter",
        apiVersion=soap.API_VERSION,
        instanceUuid="52c1a3e0-0d6f-4f3c-9a55-6c6162000001",
        licenseProductName="VMware VirtualCenter Server",
        licenseProductVersion="8.0",
    )
