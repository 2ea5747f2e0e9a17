"""The lab's HTTP(S) front: SOAP on /sdk, and /folder, /nfc/, /lab/ handed to their modules.

Two listeners share one handler class: HTTPS serves everything, the plain-HTTP port serves only
the data paths (/folder, /nfc, /lab) so the cost of TLS can be measured against it.
"""

from __future__ import annotations

import logging
import ssl
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from pyVmomi import vmodl

from vcblab import control, fileservice, httpbody, nfc, soap
from vcblab.methods import Client, dispatch
from vcblab.model import COOKIE_NAME, Lab

log = logging.getLogger(__name__)

MAX_SOAP_BODY = 16 << 20
_DATA_ROUTES = (("/folder", fileservice), ("/nfc/", nfc), ("/lab/", control))


class LabHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Headers and body go out in separate writes; with Nagle on, each response would wait for
    # the client's delayed ACK (40 ms a call).
    disable_nagle_algorithm = True
    server_version = "VMware-vSphere-lab"
    lab: Lab = None  # set per server class
    tls: bool = True

    def log_message(self, fmt, *args):  # route the stdlib's stderr chatter to logging
        log.debug("%s " + fmt, self.address_string(), *args)

    def _route_data(self) -> bool:
        path = self.path.split("?", 1)[0]
        for prefix, module in _DATA_ROUTES:
            if path == prefix.rstrip("/") or path.startswith(prefix):
                module.handle(self, self.lab)
                return True
        return False

    def _plain(self, code: int, text: str, ctype: str = "text/plain") -> None:
        body = text.encode() if isinstance(text, str) else text
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def do_GET(self):
        if self._route_data():
            return
        if self.tls and self.path.split("?", 1)[0] == "/sdk/vimServiceVersions.xml":
            self._plain(200, soap.service_versions_xml(), "text/xml")
            return
        self._plain(404, "not found\n")

    do_HEAD = do_GET
    do_PUT = do_GET

    def do_POST(self):
        if self._route_data():
            return
        if not self.tls or self.path.split("?", 1)[0] != "/sdk":
            self._plain(404, "not found\n")
            return
        try:
            data = httpbody.read_all(self.rfile, self.headers, MAX_SOAP_BODY)
        except httpbody.BodyError as err:
            self.close_connection = True  # the rest of the body would be read as a request
            self._plain(err.status, err.reason + "\n")
            return
        status, body, cookie = self._soap(data)
        self.send_response(status)
        self.send_header("Content-Type", "text/xml; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        if cookie:
            self.send_header("Set-Cookie", f'{COOKIE_NAME}="{cookie}"; Path=/; HttpOnly; Secure')
        self.end_headers()
        self.wfile.write(body)

    def _soap(self, data: bytes) -> tuple[int, bytes, str | None]:
        try:
            request = soap.parse_request(data)
        except soap.SoapError as exc:
            return 500, soap.serialize_fault(vmodl.fault.InvalidRequest(msg=str(exc))), None
        try:
            result, cookie = dispatch(
                self.lab,
                request,
                self.headers.get("Cookie"),
                client=Client(
                    address=self.client_address[0], user_agent=self.headers.get("User-Agent", "")
                ),
            )
            info = request.info
            if request.method == "Fetch":
                info = soap.fetch_info(type(request.this), request.args["prop"])
            return 200, soap.serialize_response(info, result), cookie
        except vmodl.MethodFault as fault:
            return 500, soap.serialize_fault(fault), None
        except Exception as exc:  # a lab bug: answer like vSphere's SystemError, log the cause
            log.exception("%s failed", request.method)
            return (
                500,
                soap.serialize_fault(
                    vmodl.fault.SystemError(
                        msg=f"lab error in {request.method}: {exc}", reason=str(exc)
                    )
                ),
                None,
            )


class _QuietServer(ThreadingHTTPServer):
    """Clients that hang up mid-response are normal (cut transfers, killed exports): log them
    instead of printing socketserver's traceback on stderr."""

    daemon_threads = True

    def handle_error(self, request, client_address):
        log.debug("connection from %s ended with an error", client_address, exc_info=True)


class _TlsServer(_QuietServer):
    """Handshakes in the request thread, so a silent client cannot stall the accept loop."""

    ssl_context: ssl.SSLContext = None

    def finish_request(self, request, client_address):
        request.settimeout(60)
        try:
            request = self.ssl_context.wrap_socket(request, server_side=True)
        except (ssl.SSLError, OSError) as exc:
            log.debug("TLS handshake with %s failed: %s", client_address, exc)
            return
        try:
            super().finish_request(request, client_address)
        finally:
            self.shutdown_request(request)  # the raw socket was detached by wrap_socket


class LabServer:
    """The HTTPS and plain-HTTP listeners of one lab, each served by a daemon thread."""

    def __init__(self, lab: Lab, host: str, port: int, http_port: int, ctx: ssl.SSLContext):
        tls_handler = type("TlsHandler", (LabHandler,), {"lab": lab, "tls": True})
        plain_handler = type("PlainHandler", (LabHandler,), {"lab": lab, "tls": False})
        self.https = _TlsServer((host, port), tls_handler)
        self.https.ssl_context = ctx
        self.http = _QuietServer((host, http_port), plain_handler)
        self.host = host
        self._threads: list[threading.Thread] = []

    @property
    def https_port(self) -> int:
        return self.https.server_address[1]

    @property
    def http_port(self) -> int:
        return self.http.server_address[1]

    def start(self) -> None:
        for srv in (self.https, self.http):
            thread = threading.Thread(
                target=srv.serve_forever, args=(0.1,), daemon=True, name="lab-http"
            )
            thread.start()
            self._threads.append(thread)

    def stop(self) -> None:
        for srv in (self.https, self.http):
            srv.shutdown()
            srv.server_close()
