"""vcbproxy as a user installs it: the wheel, in a fresh virtualenv outside the checkout.

Every other test runs the package from the checkout (an editable install, PYTHONPATH), which
once hid a lab left out of the wheel. Here the wheel is built from the sources, installed
into a new virtualenv in a temporary directory, and every command runs from there with no
PYTHONPATH and its working directory elsewhere: the demo's flow (lab serve, vms, mount,
verify, unmount, compare with guest writes) and VCB's console scripts.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.e2e.cli import ROOT, Result, mount_watching_command_line
from vcblab.client import LabClient
from vcblab.process import start_lab

# What a wheel is built from: the sources, not the checkout's venv, caches or build trees.
SOURCES = ("setup.cfg", "pyproject.toml", "README.md", "vcbproxy", "vcblab")


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """The bin/ directory of a fresh virtualenv holding only the wheel and its dependencies."""
    base = tmp_path_factory.mktemp("installed")
    src = base / "src"
    src.mkdir()
    for name in SOURCES:
        if (ROOT / name).is_dir():
            shutil.copytree(
                ROOT / name, src / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc")
            )
        else:
            shutil.copy2(ROOT / name, src / name)
    pip = [sys.executable, "-m", "pip", "-q", "--disable-pip-version-check"]
    subprocess.run([*pip, "wheel", "--no-deps", "-w", str(base / "dist"), str(src)], check=True)
    (wheel,) = (base / "dist").glob("vcbproxy-*.whl")
    venv = base / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    subprocess.run(
        [*pip, "--python", str(venv / "bin" / "python"), "install", str(wheel)], check=True
    )
    return venv / "bin"


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    """Where the installed commands run: not the checkout."""
    return tmp_path_factory.mktemp("elsewhere")


def clean_env(installed: Path, **extra: str) -> dict[str, str]:
    """The environment of a user of the install: no PYTHONPATH, no vcbproxy settings, and the
    checkout's virtualenv off PATH."""
    drop = ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")
    env = {k: v for k, v in os.environ.items() if k not in drop and not k.startswith("VCBPROXY_")}
    path = [p for p in env.get("PATH", "").split(":") if p and not p.startswith(str(ROOT))]
    env["PATH"] = ":".join([str(installed), *path])
    env.update(extra)
    return env


@pytest.fixture(scope="module")
def lab(installed, work):
    """The lab served by the installed package (vcblab from the wheel)."""
    with start_lab(
        work / "lab",
        disk_size="4M",
        program=[str(installed / "vcbproxy")],
        env=clean_env(installed),
        cwd=work,
    ) as proc:
        yield proc


@pytest.fixture(scope="module")
def env(installed, lab):
    info = lab.info
    return clean_env(
        installed,
        VCBPROXY_SERVER=f"127.0.0.1:{info['https_port']}",
        VCBPROXY_USER=info["user"],
        VCBPROXY_PASSWORD_FILE=info["password_file"],
        VCBPROXY_THUMBPRINT=info["thumbprint_sha256"],
    )


def tool(installed: Path, env: dict, work: Path, name: str, *args: str) -> Result:
    proc = subprocess.run(
        [str(installed / name), *args],
        env=env,
        cwd=work,
        capture_output=True,
        text=True,
        timeout=300,
    )
    return Result(proc.returncode, proc.stdout, proc.stderr)


def test_the_install_holds_both_packages_and_nothing_from_the_checkout(installed, env, work):
    probe = "import vcbproxy, vcblab; print(vcbproxy.__file__); print(vcblab.__file__)"
    res = tool(installed, env, work, "python", "-c", probe)
    assert res.code == 0, res
    site = installed.parent / "lib"
    for line in res.out.splitlines():
        assert Path(line).is_relative_to(site) and not Path(line).is_relative_to(ROOT), line


def test_the_demo_flow_runs_from_the_install(installed, env, work, lab):
    target = work / "web01-fullVM"
    res = tool(installed, env, work, "vcbproxy", "vms", "-s", "any")
    assert res.code == 0 and "name:web01" in res.out, res
    res = tool(installed, env, work, "vcbproxy", "mount", "-a", "name:web01", "-r", str(target))
    assert res.code == 0, res
    meta = json.loads((target / "vcbproxy.json").read_text())
    truth = LabClient(lab.info)
    for disk in meta["disks"]:
        expected = truth.oracle(snapshot=meta["snapshot"]["moref"], key=disk["key"])["sha256"]
        assert disk["content_sha256"] == expected, disk["device"]
    res = tool(installed, env, work, "vcbproxy", "verify", str(target))
    assert res.code == 0, res
    res = tool(installed, env, work, "vcbproxy", "unmount", "-r", str(target))
    assert res.code == 0 and not target.exists(), res


def test_compare_with_guest_writes_runs_from_the_install(installed, env, work, lab):
    lab_info = str(Path(lab.info["root"]) / "lab-info.json")
    args = ["compare", "-a", "name:web01", "--runs", "2", "--churn", "1", "--lab-info", lab_info]
    # The chart is the 'chart' extra, not installed here: said before anything runs.
    res = tool(installed, env, work, "vcbproxy", *args, "--workdir", str(work / "cmp0"))
    assert res.code == 2 and "vcbproxy[chart]" in res.err and "Traceback" not in res.err, res
    assert not (work / "cmp0").exists()
    res = tool(
        installed, env, work, "vcbproxy", *args, "--workdir", str(work / "cmp"), "--no-chart"
    )
    assert res.code == 0, res
    report = json.loads((work / "cmp" / "compare.json").read_text())
    assert [r["run"] for r in report["runs"]] == [1, 2]
    assert report["runs"][1]["churn_bytes"] > 0 and report["runs"][1]["cbt_read"] > 0


def test_vcb_console_scripts_run_from_the_install(installed, env, work, lab):
    info = lab.info
    flags = ["-h", f"127.0.0.1:{info['https_port']}", "-u", info["user"], "-p", lab.password]
    bare = clean_env(installed, VCBPROXY_THUMBPRINT=info["thumbprint_sha256"])
    res = tool(installed, bare, work, "vcbVmName", *flags, "-s", "name:web01")
    assert res.code == 0 and res.out.startswith("Found VM:\nmoref:"), res
    moref = res.out.split("moref:", 1)[1].split()[0]
    res = tool(installed, bare, work, "vcbSnapshot", *flags, "-c", moref, "installed-test")
    assert res.code == 0 and res.out.startswith("SsId:"), res
    ssid = res.out.strip()
    res = tool(installed, bare, work, "vcbSnapshot", *flags, "-d", moref, ssid)
    assert res.code == 0, res

    target = work / "vcb-web01-fullVM"
    res = tool(installed, bare, work, "vcbMounter", *flags, "-a", "name:web01", "-r", str(target))
    assert res.code == 0 and (target / "vcbproxy.json").is_file(), res
    # The export's VM exists under its own name: vcbRestore -b keep refuses to touch it.
    res = tool(installed, bare, work, "vcbRestore", *flags, "-s", str(target), "-b", "keep")
    assert res.code == 14 and "already exists" in res.err, res
    res = tool(installed, bare, work, "vcbMounter", *flags, "-U", str(target))
    assert res.code == 0 and not target.exists(), res

    root = work / "backuproot"
    root.mkdir()
    config = work / "config.ini"
    config.write_text(
        f'BACKUPROOT="{root}"\nHOST="127.0.0.1"\nPORT="{info["https_port"]}"\n'
        f'USERNAME="{info["user"]}"\nPASSWORD_FILE="{info["password_file"]}"\n'
        f'THUMBPRINT="{info["thumbprint_sha256"]}"\n'
    )
    cenv = clean_env(installed, VCBPROXY_CONFIG=str(config))
    res = tool(installed, cenv, work, "vcbproxy-pre-command", "files01", "fullvm")
    assert res.code == 0 and (root / "files01-fullVM" / "vcbproxy.json").is_file(), res
    res = tool(installed, cenv, work, "vcbCleanup")
    assert res.code == 0 and str(root / "files01-fullVM") in res.out, res
    res = tool(installed, cenv, work, "vcbproxy-post-command", "files01")
    assert res.code == 0 and not (root / "files01-fullVM").exists(), res


def test_the_installed_vcbmounter_never_shows_the_password_in_its_command_line(
    installed, work, lab
):
    info = lab.info
    flags = ["-h", f"127.0.0.1:{info['https_port']}", "-u", info["user"], "-p", lab.password]
    bare = clean_env(installed, VCBPROXY_THUMBPRINT=info["thumbprint_sha256"])
    target = work / "slow-web01-fullVM"
    client = LabClient(info)
    client.set_faults(throttle_bps=2 << 20)  # time to look at the running process
    argv = [str(installed / "vcbMounter"), *flags, "-a", "name:web01", "-r", str(target)]
    try:
        mount_watching_command_line(argv, target, lab.password, env=bare, cwd=work)
    finally:
        client.set_faults(throttle_bps=None)
    assert tool(installed, bare, work, "vcbMounter", *flags, "-U", str(target)).code == 0
