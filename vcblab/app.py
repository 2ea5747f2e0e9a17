"""Start a whole lab in this process: inventory, default VMs, certificate, password, listeners.

`vcbproxy lab serve` and tests that want an in-process lab both go through start().
"""

from __future__ import annotations

import os
import secrets
import shutil
from pathlib import Path

from vcblab import tls
from vcblab.inventory import build_lab
from vcblab.model import Lab
from vcblab.server import LabServer


def datacenters_info(lab: Lab) -> dict:
    """{inventory path: its datastores (name -> directory, kind), clusters and hosts}: where a
    test finds the second datacenter's ``datastore1``."""
    return {
        dc.path: {
            "moref": dc.moref,
            "datastores": {name: str(ds.path) for name, ds in dc.datastores.items()},
            "datastore_kinds": {name: ds.kind for name, ds in dc.datastores.items()},
            "clusters": {
                c.name: {"drs": c.drs, "hosts": [h.name for h in c.hosts]} for c in dc.clusters
            },
        }
        for dc in lab.datacenters
    }


def start(
    root: Path,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    http_port: int = 0,
    vms: int = 0,
    seed: int = 0,
    disk_size: int = 32 << 20,
    faults: dict | None = None,
    big_vms: dict[str, int] | None = None,
) -> tuple[Lab, LabServer, dict]:
    """Build and serve a lab; returns it, its server and the info dict `lab serve` prints."""
    root = Path(root).resolve()
    root.mkdir(parents=True, exist_ok=True)
    pwfile = root / "lab-password"
    if pwfile.exists():
        password = pwfile.read_text().strip()
    else:
        password = secrets.token_urlsafe(16)
        fd = os.open(pwfile, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(password + "\n")
    # Every start is the same deterministic lab: VMs and disks of an earlier run are dropped
    # (the certificate and password are kept, so clients that pinned them still connect).
    for stale in [root / "oracle", *root.glob("datastores*")]:
        shutil.rmtree(stale, ignore_errors=True)
    lab = build_lab(root, seed=seed, password=password)
    lab.password_file = pwfile
    if faults:
        lab.faults.set(faults)
    from vcblab.defaults import populate

    populate(lab, extra_vms=vms, disk_size=disk_size, big_vms=big_vms)
    cert_file, key_file = tls.ensure_certificate(root)
    lab.thumbprint_sha1 = tls.thumbprint(cert_file, "sha1")
    server = LabServer(lab, host, port, http_port, tls.server_context(cert_file, key_file))
    server.start()
    info = {
        "sdk_url": f"https://{host}:{server.https_port}/sdk",
        "https_port": server.https_port,
        "http_url": f"http://{host}:{server.http_port}",
        "http_port": server.http_port,
        "host": host,
        "user": lab.user,
        "password_file": str(pwfile),
        "thumbprint_sha1": lab.thumbprint_sha1,
        "thumbprint_sha256": tls.thumbprint(cert_file, "sha256"),
        "cert_file": str(cert_file),
        "datacenter": lab.datacenter_name,
        "datastores": {name: str(path) for name, path in lab.datastores.items()},
        "datastore_kinds": dict(lab.datastore_kinds),
        "datacenters": datacenters_info(lab),
        "root": str(root),
    }
    return lab, server, info
