"""The README's demo: a VCB-style full-VM export from the embedded lab, end to end.

Runs real processes over real sockets: `vcbproxy lab serve`, then the `vcbproxy` CLI as
a user would type it (password in a file, the lab's certificate pinned by thumbprint).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def run(env, *args, check=True):
    cmd = [sys.executable, "-m", "vcbproxy", *args]
    print(f"\n$ vcbproxy {' '.join(args)}", flush=True)
    proc = subprocess.run(cmd, env=env, text=True)
    if check and proc.returncode not in (0, 3):
        sys.exit(f"demo: 'vcbproxy {args[0]}' failed with exit code {proc.returncode}")
    return proc.returncode


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--vm", default="web01", help="display name of the lab VM to export")
    parser.add_argument("--format", default="2gbsparse")
    parser.add_argument("--mode", default="nbdssl")
    parser.add_argument("--keep", action="store_true", help="keep the export and the lab's files")
    args = parser.parse_args()

    from vcblab.process import start_lab

    work = Path(tempfile.mkdtemp(prefix="vcbproxy-demo-"))
    target = ROOT / "staging" / f"{args.vm}-fullVM"
    print(f"demo: starting the lab under {work}/lab", flush=True)
    lab = start_lab(work / "lab")
    try:
        info = lab.info
        env = dict(os.environ)
        env.update(
            VCBPROXY_SERVER=f"127.0.0.1:{info['https_port']}",
            VCBPROXY_USER=info["user"],
            VCBPROXY_PASSWORD_FILE=info["password_file"],
            VCBPROXY_THUMBPRINT=info["thumbprint_sha256"],
        )
        print(
            json.dumps({k: info[k] for k in ("sdk_url", "http_url", "thumbprint_sha256")}, indent=2)
        )
        run(env, "vms", "-s", "any")
        # The guest keeps writing while we export: the export must still be the snapshot's content.
        churn = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "vcbproxy",
                "lab",
                "churn",
                "--root",
                str(work / "lab"),
                "--vm",
                args.vm,
                "--percent",
                "5",
            ],
            env=env,
        )
        started = time.monotonic()
        run(
            env,
            "mount",
            "-a",
            f"name:{args.vm}",
            "-r",
            str(target),
            "-m",
            args.mode,
            "--format",
            args.format,
            "--preexisting-mountpoint",
            "delete",
        )
        elapsed = time.monotonic() - started
        churn.wait()
        print(f"\ndemo: export took {elapsed:.1f} s; {target}:")
        for p in sorted(target.iterdir()):
            print(f"  {p.stat().st_size:>12}  {p.name}")
        meta = json.loads((target / "vcbproxy.json").read_text())
        from vcblab.client import LabClient

        truth = LabClient(info)
        print(
            "\ndemo: disks as exported (sha256 of the content at the snapshot), checked against the lab:"
        )
        for d in meta["disks"]:
            if d.get("skipped"):
                print(f"  {d['device']:<8} {d['label']:<12} skipped")
                continue
            expected = truth.oracle(snapshot=meta["snapshot"]["moref"], key=d["key"])["sha256"]
            verdict = (
                "equal to the lab's disk at the snapshot"
                if expected == d["content_sha256"]
                else "DIFFERENT"
            )
            print(f"  {d['device']:<8} {d['label']:<12} {d['content_sha256']}  {verdict}")
        if shutil.which("qemu-img"):
            first = next(d for d in meta["disks"] if not d.get("skipped"))
            print(f"\n$ qemu-img info {first['files'][0]}")
            subprocess.run(["qemu-img", "info", str(target / first["files"][0])], check=False)
        run(env, "verify", str(target))
        run(env, "snapshot", "list", "-a", f"name:{args.vm}")
        if not args.keep:
            run(env, "unmount", "-r", str(target))
    finally:
        lab.stop()
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    print("\ndemo: done" + (f"; export kept in {target}" if args.keep else ""))
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    sys.exit(main())
