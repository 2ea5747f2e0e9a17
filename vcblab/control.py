"""The lab's control API (``/lab/...``, JSON): what tests and the demo do to the lab that a
vSphere API would not let them do - write into a running guest, flip fault switches, ask
for the exact content of a disk at a snapshot (the oracle exports are checked against).

Authenticated by the SOAP session cookie or by ``Authorization: Bearer <lab password>``,
so a test can drive it without logging in over SOAP first.

    POST /lab/churn   {"vm": name|moref, "percent": p, "seed": s} -> {"bytes", "disks"}
    GET  /lab/faults                                               -> {switch: value}
    POST /lab/faults  {switch: value, ...}                         -> {switch: value}
    GET  /lab/oracle?snapshot=<moref>&key=<device key>[&raw=1]     -> {"sha256", "size"[, "path"]}
    GET  /lab/oracle?vm=<name|moref>&key=<device key>[&raw=1]      -> same, current content
    GET  /lab/state?vm=<name|moref>                                -> snapshots, disks, CBT
    GET  /lab/sessions                                             -> {"logins": n}
    GET  /lab/readers     -> {"datastores": {"dc/ds": {"now", "max"}}, "hosts": {name: ...},
                              "lab": {"now", "max"}}
    POST /lab/readers     {} -> forget the peaks; answers the record before
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import random
from pathlib import Path

from vcblab.faults import FaultError
from vcblab.fileservice import HttpError, query_of, reply_error, reply_json

log = logging.getLogger(__name__)

MAX_BODY = 1 << 20


def handle(req, lab) -> None:
    """Answer one ``/lab/...`` request on either port."""
    try:
        _authenticate(req, lab)
        path, params = query_of(req)
        route = _ROUTES.get((req.command, path.rstrip("/")))
        if route is None:
            known = ", ".join(f"{m} {p}" for m, p in _ROUTES)
            raise HttpError(404, f"no control endpoint {req.command} {path}; known: {known}")
        body = _json_body(req) if req.command == "POST" else {}
        reply_json(req, 200, route(lab, params, body))
    except HttpError as err:
        reply_error(req, err)


# -- authentication ------------------------------------------------------------------------


def _lab_password(lab) -> str | None:
    password = getattr(lab, "password", None)
    if password:
        return password
    pwfile = getattr(lab, "password_file", None)
    if pwfile:
        try:
            return Path(pwfile).read_text().strip()
        except OSError:
            return None
    return None


def _authenticate(req, lab) -> None:
    auth = req.headers.get("Authorization", "")
    if auth.lower().startswith("bearer "):
        password = _lab_password(lab)
        token = auth[7:].strip()
        if password and hmac.compare_digest(token.encode(), password.encode()):
            return
        raise HttpError(401, "bearer token is not the lab password")
    if lab.session_for_cookie(req.headers.get("Cookie")) is None:
        raise HttpError(
            401,
            "not authenticated: send the SOAP session cookie or "
            "'Authorization: Bearer <lab password>'",
        )


def _json_body(req) -> dict:
    length = req.headers.get("Content-Length")
    if length is None or not length.strip().isdigit():
        req.close_connection = True
        raise HttpError(411, "POST needs a Content-Length")
    if int(length) > MAX_BODY:
        req.close_connection = True
        raise HttpError(413, "request body too large")
    raw = req.rfile.read(int(length)) if int(length) else b"{}"
    try:
        body = json.loads(raw or b"{}")
    except ValueError as exc:
        raise HttpError(400, f"body is not JSON: {exc}") from None
    if not isinstance(body, dict):
        raise HttpError(400, "body must be a JSON object")
    return body


# -- lookups -------------------------------------------------------------------------------


def _vm(lab, name: str | None):
    if not name:
        raise HttpError(400, "a vm (name or moref) is required")
    vm = lab.find_vm(name)
    if vm is None:
        raise HttpError(404, f"no VM named {name!r}")
    return vm


def _key(raw) -> int:
    try:
        return int(raw)
    except (TypeError, ValueError):
        raise HttpError(400, f"key must be a device key (an integer), not {raw!r}") from None


def _disk(vm, key: int):
    disk = vm.disks.get(key)
    if disk is None:
        raise HttpError(
            404, f"VM {vm.name!r} has no disk with device key {key}; keys: {sorted(vm.disks)}"
        )
    return disk


# -- endpoints -----------------------------------------------------------------------------


def _churn(lab, params: dict, body: dict) -> dict:
    vm = _vm(lab, body.get("vm"))
    try:
        percent = float(body.get("percent"))
    except (TypeError, ValueError):
        raise HttpError(400, "percent must be a number") from None
    if not 0 <= percent <= 100:
        raise HttpError(400, "percent must be between 0 and 100")
    seed = body.get("seed")
    seed = random.randrange(1 << 31) if seed is None else int(seed)
    disks = {}
    for key in sorted(vm.disks):
        # A different but reproducible pattern per disk, so disks do not change alike.
        disk_seed = int.from_bytes(hashlib.sha256(f"{seed}/{key}".encode()).digest()[:4], "big")
        disks[str(key)] = int(vm.disks[key].churn(percent, disk_seed))
    log.info("churn %s %.3g%% seed %s: %d bytes", vm.name, percent, seed, sum(disks.values()))
    return {"vm": vm.moref, "seed": seed, "bytes": sum(disks.values()), "disks": disks}


def _get_faults(lab, params: dict, body: dict) -> dict:
    return lab.faults.snapshot()


def _set_faults(lab, params: dict, body: dict) -> dict:
    try:
        return lab.faults.set(body)
    except FaultError as exc:
        raise HttpError(400, str(exc)) from None


def _oracle(lab, params: dict, body: dict) -> dict:
    key = _key(params.get("key"))
    snapshot = params.get("snapshot")
    if snapshot:
        entry = lab.snapshot_history.get(snapshot)
        if entry is None:
            raise HttpError(404, f"no snapshot {snapshot!r} in the lab's history")
        vm = entry["vm"]
        if isinstance(vm, str):
            vm = _vm(lab, vm)
        disk = _disk(vm, key)
        marks = entry["marks"]
        mark = marks.get(key, marks.get(str(key)))  # str keys once reloaded from JSON
        if mark is None:
            raise HttpError(404, f"snapshot {snapshot} has no disk with device key {key}")
        label = f"{snapshot}-{key}"
    else:
        vm = _vm(lab, params.get("vm"))
        disk = _disk(vm, key)
        mark = None
        label = f"{vm.moref}-{key}-current"
    if params.get("raw") not in ("1", "true", "yes"):
        return {"size": disk.capacity, "sha256": disk.sha256(mark)}
    out = Path(lab.root) / "oracle" / f"{label}.raw"
    out.parent.mkdir(parents=True, exist_ok=True)
    return {"size": disk.capacity, "sha256": disk.export_raw(out, mark), "path": str(out)}


def _state(lab, params: dict, body: dict) -> dict:
    vm = _vm(lab, params.get("vm"))
    state = vm.describe()
    for key, disk in vm.disks.items():
        _add_disk_state(state["disks"][str(key)], disk)
    return json.loads(json.dumps(state, default=str))


def _sessions(lab, params: dict, body: dict) -> dict:
    """How many logins the lab has accepted: a client that kept its session alive logged in
    once, one that let it expire and logged in again, twice."""
    return {"logins": lab.logins}


def _add_disk_state(out: dict, disk) -> None:
    """Add to describe()'s disk entry what a test also asks: its files and change tracking."""
    with disk.lock:  # one consistent view while a churn may be writing
        out["files"] = list(disk.files())
        out["cbt"] = {"enabled": disk.cbt.enabled, "change_id": disk.cbt.change_id}


def _readers(lab, params: dict, body: dict) -> dict:
    return lab.readers.report()


def _reset_readers(lab, params: dict, body: dict) -> dict:
    return lab.readers.reset()


_ROUTES = {
    ("GET", "/lab/readers"): _readers,
    ("POST", "/lab/readers"): _reset_readers,
    ("POST", "/lab/churn"): _churn,
    ("GET", "/lab/faults"): _get_faults,
    ("POST", "/lab/faults"): _set_faults,
    ("GET", "/lab/oracle"): _oracle,
    ("GET", "/lab/state"): _state,
    ("GET", "/lab/sessions"): _sessions,
}
