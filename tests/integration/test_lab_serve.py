"""`vcbproxy lab serve`: one JSON line, fast start, 0600 password, clean exit on signals."""

from __future__ import annotations

import json
import os
import signal
import ssl
import stat
import subprocess
import sys
import time
import urllib.request

import pytest

from vcblab.process import start_lab


def test_serve_prints_info_and_starts_fast(tmp_path):
    t0 = time.monotonic()
    with start_lab(tmp_path / "lab", disk_size="4M") as lab:
        elapsed = time.monotonic() - t0
        info = lab.info
        assert elapsed < 2.0, f"lab took {elapsed:.2f}s to start"
        for field in (
            "sdk_url",
            "https_port",
            "http_url",
            "http_port",
            "user",
            "password_file",
            "thumbprint_sha1",
            "thumbprint_sha256",
            "cert_file",
            "datacenter",
            "datastores",
            "root",
        ):
            assert field in info, field
        assert info["sdk_url"] == f"https://127.0.0.1:{info['https_port']}/sdk"
        assert set(info["datastores"]) == {"datastore1", "datastore2", "nfsstore"}
        assert info["datastore_kinds"] == {
            "datastore1": "vmfs6",
            "datastore2": "vmfs5",
            "nfsstore": "nfs",
        }
        assert all(os.path.isdir(d) for d in info["datastores"].values())
        mode = stat.S_IMODE(os.stat(info["password_file"]).st_mode)
        assert mode == 0o600
        assert len(info["thumbprint_sha1"].split(":")) == 20
        ctx = ssl.create_default_context(cafile=info["cert_file"])
        url = f"https://127.0.0.1:{info['https_port']}/sdk/vimServiceVersions.xml"
        with urllib.request.urlopen(url, context=ctx, timeout=10) as resp:
            assert b"<version>8.0.3.0</version>" in resp.read()
        # The plain port does not speak SOAP.
        req = urllib.request.Request(f"{info['http_url']}/sdk", data=b"<x/>", method="POST")
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(req, timeout=10)
        assert err.value.code == 404
        assert lab.stop() == 0


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_serve_exits_zero_on_signal(tmp_path, sig):
    lab = start_lab(tmp_path / "lab", disk_size="1M")
    lab.proc.send_signal(sig)
    assert lab.proc.wait(10) == 0
    lab.stop()


def test_serve_rejects_unknown_fault_without_traceback(tmp_path):
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "vcbproxy",
            "lab",
            "serve",
            "--root",
            str(tmp_path),
            "--fault",
            "no_such_switch=1",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert "no_such_switch" in proc.stderr and "Traceback" not in proc.stderr


def test_lab_info_file_is_written(tmp_path):
    with start_lab(tmp_path / "lab", disk_size="1M", vms=2) as lab:
        saved = json.loads((tmp_path / "lab" / "lab-info.json").read_text())
        assert saved == lab.info


def test_churn_command_writes_into_a_running_lab(tmp_path):
    with start_lab(tmp_path / "lab", disk_size="2M") as lab:
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "vcbproxy",
                "lab",
                "churn",
                "--root",
                str(tmp_path / "lab"),
                "--vm",
                "web01",
                "--percent",
                "10",
                "--seed",
                "5",
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert proc.returncode == 0, proc.stderr
        result = json.loads(proc.stdout)
        assert result["bytes"] > 0 and set(result["disks"]) == {"2000", "2001"}
        assert lab.info["root"] == str(tmp_path / "lab")
    missing = subprocess.run(
        [
            sys.executable,
            "-m",
            "vcbproxy",
            "lab",
            "churn",
            "--root",
            str(tmp_path / "none"),
            "--vm",
            "web01",
            "--percent",
            "1",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert missing.returncode != 0 and "Traceback" not in missing.stderr
