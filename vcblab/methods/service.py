"""ServiceInstance and SessionManager: the calls before and around a session."""

from __future__ import annotations

import datetime

from pyVmomi import vim, vmodl

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
    session = call.lab.login(
        userName or "",
        password or "",
        user_agent=call.client.user_agent,
        address=call.client.address,
    )
    if session is None:
        raise vim.fault.InvalidLogin(
            msg="Cannot complete login due to an incorrect user name or password."
        )
    call.new_cookie = session.key
    call.lab.events.post(
        vim.event.UserLoginSessionEvent(
            userName=session.user,
            ipAddress=session.ip_address,
            userAgent=session.user_agent,
            locale=locale or "en",
            sessionId=session.key,
            fullFormattedMessage=f"User {session.user}@{session.ip_address} logged in as "
            f"{session.user_agent}",
        )
    )
    return session.user_session()


def _logout_event(lab, session, who: str) -> None:
    lab.events.post(
        vim.event.UserLogoutSessionEvent(
            userName=who,
            ipAddress=session.ip_address,
            userAgent=session.user_agent,
            sessionId=session.key,
            loginTime=session.user_session().loginTime,
            fullFormattedMessage=f"User {session.user}@{session.ip_address} logged out",
        )
    )


@method("Logout")
def logout(call, this):
    call.lab.logout(call.session)
    _logout_event(call.lab, call.session, call.session.user)


@method("TerminateSession")
def terminate_session(call, this, sessionId):
    """End other sessions by key; unknown keys fault with NotFound, none is ended then."""
    lab = call.lab
    if call.session.key in (sessionId or []):
        raise vmodl.fault.InvalidArgument(
            msg="A session cannot terminate itself; use Logout.", invalidProperty="sessionId"
        )
    with lab.lock:
        targets = [lab.sessions.get(key) for key in sessionId or []]
        missing = [k for k, s in zip(sessionId or [], targets, strict=True) if s is None]
        if missing:
            raise vim.fault.NotFound(msg=f"The session {missing[0]} was not found.")
        for session in targets:
            lab.logout(session)
            _logout_event(lab, session, call.session.user)


@method("SessionIsActive")
def session_is_active(call, this, sessionID, userName):
    return call.lab.session(sessionID) is not None


def about(instance_uuid: str):
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
        instanceUuid=instance_uuid,
        licenseProductName="VMware VirtualCenter Server",
        licenseProductVersion="8.0",
    )
