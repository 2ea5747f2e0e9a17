"""Python client of the lab's control API (``vcblab.control``).

Used by the tests, the demo and ``vcbproxy lab churn``. Talks to the lab's plain-HTTP port
(loopback, no certificate to pin) with the lab password as a bearer token. Failures come
back as vcbproxy errors, so the CLI prints one line and the right exit code.
"""

from __future__ import annotations

import http.client
import json
import ssl
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit

from vcblab.faults import SWITCHES
from vcbproxy import errors

TIMEOUT = 120.0  # churn of a large disk takes a while


class LabClient:
    """``LabClient(info)`` where ``info`` is the JSON line ``vcbproxy lab serve`` prints.

    Needs ``http_url`` (or ``url``, or ``http_port`` plus the host of ``sdk_url``) and
    ``password_file`` (or ``password``).
    """

    def __init__(self, info: dict[str, Any]):
        self.host, self.port = _endpoint(info)
        if info.get("password"):
            self._token = str(info["password"])
        elif info.get("password_file"):
            try:
                self._token = Path(info["password_file"]).read_text().strip()
            except OSError as exc:
                raise errors.AuthError(
                    f"cannot read the lab password file {info['password_file']}: {exc}"
                ) from exc
        else:
            raise errors.UsageError("lab info has neither password_file nor password")
        self.info = info

    # -- the API ---------------------------------------------------------------------------

    def login(self) -> str:
        """Log in over SOAP (pyVmomi, TLS verified against the lab certificate) and return
        the ``Cookie`` header value the file service and NFC URLs accept."""
        from pyVim.connect import SmartConnect

        try:
            si = SmartConnect(
                host=self.host,
                port=int(self.info["https_port"]),
                user=self.info["user"],
                pwd=self._token,
                sslContext=ssl.create_default_context(cafile=self.info["cert_file"]),
            )
        except (OSError, ssl.SSLError) as exc:
            raise errors.ConnectionFailure(f"lab SOAP login failed: {exc}") from exc
        except Exception as exc:  # pyVmomi faults (InvalidLogin) are not OSErrors
            raise errors.AuthError(f"lab SOAP login failed: {exc}") from exc
        return si._stub.cookie

    def churn(self, vm: str, percent: float, seed: int | None = None) -> dict:
        """Write ``percent`` % of each of the VM's disks as its guest would; returns
        ``{"bytes": total, "disks": {key: bytes}, "seed": seed}``."""
        return self._call("POST", "/lab/churn", {"vm": vm, "percent": percent, "seed": seed})

    def churn_bytes(self, vm: str, percent: float, seed: int) -> int:
        """``churn`` as ``vcbproxy compare`` wants it: the number of bytes written."""
        return int(self.churn(vm, percent, seed=seed)["bytes"])

    def faults(self) -> dict:
        return self._call("GET", "/lab/faults")

    def set_faults(self, **switches) -> dict:
        """Set fault switches (``None`` turns one off); returns all switches."""
        return self._call("POST", "/lab/faults", switches)

    def reset_faults(self) -> dict:
        """Set every fault switch back to its default (all of ``vcblab.faults.SWITCHES``,
        so a switch added there is reset too); returns all switches."""
        return self.set_faults(**{name: default for name, (_, default) in SWITCHES.items()})

    def oracle(
        self, *, key: int, snapshot: str | None = None, vm: str | None = None, raw: bool = False
    ) -> dict:
        """``{"sha256", "size"}`` of a disk at ``snapshot`` (moref) or, with ``vm``, now;
        ``raw=True`` also writes a raw image under the lab root and returns its ``"path"``."""
        if (snapshot is None) == (vm is None):
            raise errors.UsageError("oracle needs exactly one of snapshot= or vm=")
        params: dict[str, Any] = {"key": key}
        if snapshot is not None:
            params["snapshot"] = snapshot
        else:
            params["vm"] = vm
        if raw:
            params["raw"] = 1
        return self._call("GET", "/lab/oracle?" + urlencode(params))

    def readers(self) -> dict:
        """The most concurrent readers seen per datastore and per host (vcblab.readers):
        ``{"datastores": {"dc/ds": {"now", "max"}}, "hosts": {name: {"now", "max"}}}``."""
        return self._call("GET", "/lab/readers")

    def reset_readers(self) -> dict:
        """Forget the peaks; returns the record as it was."""
        return self._call("POST", "/lab/readers", {})

    def state(self, vm: str) -> dict:
        return self._call("GET", "/lab/state?" + urlencode({"vm": vm}))

    def logins(self) -> int:
        """Logins the lab has accepted since it started."""
        return int(self._call("GET", "/lab/sessions")["logins"])

    # -- transport -------------------------------------------------------------------------

    def _call(self, method: str, path: str, body: dict | None = None) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        headers = {"Authorization": f"Bearer {self._token}", "Accept": "application/json"}
        if data is not None:
            headers["Content-Type"] = "application/json"
        conn = http.client.HTTPConnection(self.host, self.port, timeout=TIMEOUT)
        try:
            conn.request(method, path, body=data, headers=headers)
            resp = conn.getresponse()
            payload = resp.read()
        except OSError as exc:
            raise errors.ConnectionFailure(
                f"lab control API at {self.host}:{self.port} unreachable: {exc}"
            ) from exc
        finally:
            conn.close()
        if resp.status != 200:
            message = payload.decode("utf-8", "replace").strip() or resp.reason
            raise _error_for(resp.status)(f"lab {method} {path.split('?')[0]}: {message}")
        try:
            return json.loads(payload)
        except ValueError as exc:
            raise errors.VcbProxyError(f"lab answered {path} with non-JSON: {exc}") from exc


def _endpoint(info: dict[str, Any]) -> tuple[str, int]:
    url = info.get("http_url") or info.get("url")
    if url:
        parts = urlsplit(url if "://" in url else f"http://{url}")
        if parts.scheme != "http" or not parts.port:
            raise errors.UsageError(f"lab URL {url!r} must be http://HOST:PORT")
        return parts.hostname or "127.0.0.1", parts.port
    if info.get("http_port"):
        host = urlsplit(info.get("sdk_url", "")).hostname or "127.0.0.1"
        return host, int(info["http_port"])
    raise errors.UsageError("lab info has no http_url/http_port")


def _error_for(status: int) -> type[errors.VcbProxyError]:
    return {400: errors.UsageError, 401: errors.AuthError, 404: errors.NotFoundError}.get(
        status, errors.VcbProxyError
    )
