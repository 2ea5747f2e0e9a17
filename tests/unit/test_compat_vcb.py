"""VCB argv → vcbproxy argv: every flag, the refusals, and where the password goes."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from vcbproxy import errors
from vcbproxy.compat import vcb
from vcbproxy.compat.config import VcbConfig, parse
from vcbproxy.compat.flags import without_password
from vcbproxy.compat.prepost import post_argvs, pre_argvs

ROOT = Path(__file__).resolve().parents[2]


def mounter(*args: str, cfg: VcbConfig | None = None, env: dict | None = None) -> vcb.Plan:
    return vcb.translate_mounter(list(args), cfg or VcbConfig(), env or {})


def opt(argv: list[str], name: str) -> str:
    return argv[argv.index(name) + 1]


def test_mounter_full_command_line():
    plan = mounter(
        "-h",
        "vc:8443",
        "-u",
        "bk",
        "-p",
        "s3cret",
        "-a",
        "ipaddr:10.0.0.5",
        "-r",
        "/stage/x",
        "-t",
        "fullvm",
        "-m",
        "nbd",
        "-M",
        "1",
        "-L",
        "4",
    )
    (argv,) = plan.runs
    assert argv[:2] == ["-v", "mount"]
    assert opt(argv, "-a") == "ipaddr:10.0.0.5" and opt(argv, "-r") == "/stage/x"
    assert opt(argv, "-m") == "nbd" and opt(argv, "--format") == "monolithic"
    assert opt(argv, "--server") == "vc:8443" and opt(argv, "--user") == "bk"
    # The password only travels in the environment.
    assert not any("s3cret" in a for a in argv)
    assert plan.env["VCBPROXY_PASSWORD"] == "s3cret"
    assert "s3cret" not in repr(plan)


@pytest.mark.parametrize(
    "flags, fmt",
    [
        ((), "2gbsparse"),
        (("-M", "0"), "2gbsparse"),
        (("-M", "1"), "monolithic"),
        (("-F", "1"), "flat"),
        (("-M", "1", "-F", "1"), "flat"),
        (("-F", "0"), "2gbsparse"),
    ],
)
def test_monolithic_and_flat_flags(flags, fmt):
    (argv,) = mounter("-a", "any", "-r", "/d", *flags).runs
    assert opt(argv, "--format") == fmt


@pytest.mark.parametrize(
    "level, head, quiet",
    [
        ("0", "mount", True),
        ("1", "mount", True),
        ("3", "mount", False),
        ("4", "-v", False),
        ("6", "-vv", False),
    ],
)
def test_log_levels(level, head, quiet):
    (argv,) = mounter("-a", "any", "-r", "/d", "-L", level).runs
    assert argv[0] == head
    assert ("--quiet" in argv) == quiet


def test_unmount():
    (argv,) = mounter("-h", "vc", "-U", "/stage/x").runs
    assert argv == ["unmount", "-r", "/stage/x", "--server", "vc"]


@pytest.mark.parametrize(
    "args, cls, needle",
    [
        (("-a", "any", "-r", "/d", "-t", "file"), errors.UnsupportedError, "-t file"),
        (("-a", "any", "-r", "/d", "-m", "hotadd"), errors.UnsupportedError, "hotadd"),
        (("-a", "any", "-r", "/d", "-m", "san:hotadd"), errors.UnsupportedError, "hotadd"),
        (("-a", "any", "-r", "/d", "-t", "disk"), errors.UsageError, "fullvm or file"),
        (("-a", "any", "-r", "/d", "-M", "2"), errors.UsageError, "0 or 1"),
        (("-a", "any", "-r", "/d", "-L", "7"), errors.UsageError, "0..6"),
        (("-a", "any"), errors.UsageError, "-r"),
        (("-r", "/d"), errors.UsageError, "-a"),
        (("-a", "any", "-r", "/d", "-Z"), errors.UsageError, "option -Z not recognized"),
        (("-a", "any", "-r", "/d", "extra"), errors.UsageError, "unexpected argument"),
        (("-U", "/d", "-a", "any"), errors.UsageError, "-U"),
    ],
)
def test_mounter_refusals(args, cls, needle):
    with pytest.raises(cls) as info:
        mounter(*args)
    assert needle in str(info.value)
    assert info.value.exit_code == cls.exit_code


def test_config_supplies_defaults_flags_win():
    cfg = parse(
        'HOST="cfg-host"\nUSERNAME="cfg-user"\nPASSWORD_FILE="/pw"\nTRANSPORT_MODE="nbd"\n'
        'EXPORT_FORMAT="flat"\nPREEXISTING_MOUNTPOINT="delete"\nPREEXISTING_VCB_SNAPSHOT="delete"\n'
        'SNAPSHOT_QUIESCE="yes"\nRETRIES="2"\n'
    )
    plan = mounter("-a", "name:x", "-r", "/d", cfg=cfg)
    (argv,) = plan.runs
    assert opt(argv, "-m") == "nbd" and opt(argv, "--format") == "flat"
    assert opt(argv, "--preexisting-mountpoint") == "delete"
    assert opt(argv, "--preexisting-snapshot") == "delete"
    assert "--quiesce" in argv and opt(argv, "--retries") == "2"
    assert plan.env["VCBPROXY_SERVER"] == "cfg-host" and plan.env["VCBPROXY_PASSWORD_FILE"] == "/pw"
    # Flags beat the config; -p beats its password file.
    plan = mounter("-a", "name:x", "-r", "/d", "-m", "nbdssl", "-M", "0", "-p", "pw", cfg=cfg)
    (argv,) = plan.runs
    assert opt(argv, "-m") == "nbdssl" and opt(argv, "--format") == "2gbsparse"
    assert plan.env["VCBPROXY_PASSWORD"] == "pw" and plan.env["VCBPROXY_PASSWORD_FILE"] == ""


def test_vmname():
    plan = vcb.translate_vmname(
        ["-h", "vc", "-u", "u", "-p", "pw", "-s", "name:web 01"], VcbConfig(), {}
    )
    assert plan.runs == [["vms", "-s", "name:web 01", "--server", "vc", "--user", "u"]]
    with pytest.raises(errors.UsageError, match="-s SELECTOR"):
        vcb.translate_vmname(["-h", "vc"], VcbConfig(), {})


@pytest.mark.parametrize(
    "args, expect, find",
    [
        (
            ["-c", "vm-42", "nightly"],
            ["snapshot", "create", "-a", "moref:vm-42", "-n", "nightly"],
            None,
        ),
        (
            ["-c", "moref:vm-42", "nightly"],
            ["snapshot", "create", "-a", "moref:vm-42", "-n", "nightly"],
            None,
        ),
        (
            ["-d", "vm-42", "SsId:snapshot-7"],
            ["snapshot", "delete", "-a", "moref:vm-42", "snapshot-7"],
            None,
        ),
        (
            ["-d", "vm-42", "snapshot-7"],
            ["snapshot", "delete", "-a", "moref:vm-42", "snapshot-7"],
            None,
        ),
        (
            ["-f", "vm-42", "_VCB-BACKUP_"],
            ["snapshot", "list", "-a", "moref:vm-42", "--json"],
            "_VCB-BACKUP_",
        ),
        (["-l", "vm-42"], ["snapshot", "list", "-a", "moref:vm-42"], None),
    ],
)
def test_snapshot(args, expect, find):
    plan = vcb.translate_snapshot(["-h", "vc", *args], VcbConfig(), {})
    assert plan.runs == [expect + ["--server", "vc"]]
    assert plan.find_name == find


@pytest.mark.parametrize(
    "args", [["-c", "vm-1"], ["-c", "vm-1", "a", "-d", "vm-1", "b"], [], ["-l", "vm-1", "x"]]
)
def test_snapshot_usage_errors(args):
    with pytest.raises(errors.UsageError):
        vcb.translate_snapshot(args, VcbConfig(), {})


def test_cleanup_lists_without_y_and_removes_with_y(tmp_path):
    root = tmp_path / "stage"
    (root / "a-fullVM").mkdir(parents=True)
    (root / "a-fullVM" / "vcbproxy.json").write_text("{}")
    (root / "not-ours").mkdir()
    cfg = VcbConfig(backuproot=root)
    dry = vcb.translate_cleanup([], cfg, {})
    assert dry.dry_run
    assert dry.runs == [
        ["snapshot", "sweep", "--dry-run"],
        ["#would-unmount", str(root / "a-fullVM")],
    ]
    real = vcb.translate_cleanup(["-y", "-h", "vc"], cfg, {})
    assert real.runs == [
        ["unmount", "-r", str(root / "a-fullVM"), "--server", "vc"],
        ["snapshot", "sweep", "--server", "vc"],
    ]


def test_pre_and_post_command_argvs(tmp_path):
    cfg = parse(
        f'BACKUPROOT="{tmp_path}"\nVM_LOOKUP_METHOD="uuid"\nTRANSPORT_MODE="nbd"\nRETRIES=1\n'
    )
    mount, verify = pre_argvs(cfg, "4231-aa")
    target = str(tmp_path / "4231-aa-fullVM")
    assert mount[:5] == ["mount", "-a", "uuid:4231-aa", "-r", target]
    assert opt(mount, "-m") == "nbd" and opt(mount, "--retries") == "1"
    assert verify == ["verify", target]
    assert post_argvs(cfg, "4231-aa") == [["unmount", "-r", target, "-a", "uuid:4231-aa"]]
    # The VM argument is a path component: it cannot climb out of BACKUPROOT.
    (mount, _) = pre_argvs(cfg, "../../etc")
    assert Path(opt(mount, "-r")).parent == tmp_path


def script(name: str, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if not k.startswith("VCBPROXY_")}
    return subprocess.run(
        [str(ROOT / "scripts" / name), *args],
        capture_output=True,
        text=True,
        env={**base, **(env or {})},
        timeout=60,
    )


def test_scripts_exit_with_vcbproxy_codes_and_never_echo_the_password(tmp_path):
    res = script(
        "vcbMounter", "-p", "hunter2", "-a", "any", "-r", str(tmp_path / "d"), "-t", "file"
    )
    assert res.returncode == errors.UNSUPPORTED, res.stderr
    assert "-t file" in res.stderr and "hunter2" not in res.stdout + res.stderr
    res = script("vcbMounter", "-a", "any", "-r", str(tmp_path / "d"), "-L", "9")
    assert res.returncode == errors.USAGE and "0..6" in res.stderr
    res = script("pre-command", "vm1", "file", env={"VCBPROXY_CONFIG": str(tmp_path / "none.ini")})
    assert res.returncode == errors.UNSUPPORTED
    res = script("pre-command", "vm1", env={"VCBPROXY_CONFIG": str(tmp_path / "none.ini")})
    assert res.returncode == errors.USAGE and "does not exist" in res.stderr
    res = script("vcbVmName", "--help")
    assert res.returncode == 0 and "-s SELECTOR" in res.stdout


@pytest.mark.parametrize(
    "tool, args, rest, pw",
    [
        (
            "vcbMounter",
            ["-h", "vc", "-p", "hunter2", "-a", "name:-p", "-r", "/d"],
            ["-h", "vc", "-a", "name:-p", "-r", "/d"],
            "hunter2",
        ),
        (
            "vcbMounter",
            ["-phunter3", "-a", "any", "-r", "/d"],
            ["-a", "any", "-r", "/d"],
            "hunter3",
        ),
        ("vcbCleanup", ["-yp", "hunter4", "-r", "/s"], ["-y", "-r", "/s"], "hunter4"),
        ("vcbCleanup", ["-yr/s", "-p", "a", "-p", "b"], ["-yr", "/s"], "b"),
        ("vcbVmName", ["-s", "-p", "-L", "3"], ["-s", "-p", "-L", "3"], None),
        ("vcbVmName", ["-s", "any", "--", "-p", "x"], ["-s", "any", "--", "-p", "x"], None),
        ("vcbVmName", ["-s", "any", "-p"], ["-s", "any", "-p"], None),
        ("pre-command", ["-p", "hunter5", "web01", "fullvm"], ["web01", "fullvm"], "hunter5"),
    ],
)
def test_password_is_taken_out_of_argv_as_getopt_reads_it(tool, args, rest, pw):
    assert without_password(tool, args) == (rest, pw)


def test_p_moves_into_the_environment_and_the_process_restarts_without_it(tmp_path):
    """The process that lives for the whole job must not carry the password in its argv: after
    the restart the kernel's view of it (/proc/self/cmdline) has everything but ``-p``, with the
    same interpreter options, and the password is in the environment instead of the file."""
    probe = tmp_path / "probe.py"
    # Stands in for a long job: the tool's own argv and environment after the restart.
    probe.write_text(
        "import os, sys\n"
        "from vcbproxy.compat import console\n"
        "console.password_out_of_argv('vcbMounter', sys.argv[1:])\n"
        "print(open('/proc/self/cmdline', 'rb').read().rstrip(b'\\0').replace(b'\\0', b' ').decode())\n"
        "print(os.environ.get('VCBPROXY_PASSWORD'), os.environ.get('VCBPROXY_PASSWORD_FILE'))\n"
    )
    base = {k: v for k, v in os.environ.items() if not k.startswith("VCBPROXY_")}
    res = subprocess.run(
        [sys.executable, "-E", str(probe), "-a", "name:-p", "-phunter2", "-r", "/d"],
        capture_output=True,
        text=True,
        env={**base, "VCBPROXY_PASSWORD_FILE": "/etc/pw"},
        cwd=ROOT,
        timeout=60,
    )
    assert res.returncode == 0, res.stderr
    cmdline, env_line = res.stdout.splitlines()
    assert "hunter2" not in cmdline and cmdline.split()[1] == "-E"  # same interpreter flags
    assert cmdline.endswith("-a name:-p -r /d")
    assert env_line == "hunter2 None"


def test_compat_main_lists_tools_for_an_unknown_one():
    res = subprocess.run(
        [sys.executable, "-m", "vcbproxy.compat", "vcbRestoreX"],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert res.returncode == errors.USAGE and "vcbMounter" in res.stderr


def restorer(*args: str, cfg: VcbConfig | None = None, env: dict | None = None) -> vcb.Plan:
    return vcb.translate_restore(list(args), cfg or VcbConfig(), env or {})


@pytest.mark.parametrize(
    "flags, policy",
    [
        ((), "keep"),
        (("-b", "keep"), "keep"),
        (("-b", "abort"), "keep"),
        (("-b", "overwrite"), "overwrite"),
        (("-b", "OVERWRITE"), "overwrite"),
    ],
)
def test_restore_command_line(flags, policy):
    plan = restorer(
        "-h", "vc:8443", "-u", "bk", "-p", "s3cret", "-s", "/stage/web01-fullVM", *flags
    )
    (argv,) = plan.runs
    assert argv[0] == "restore"
    assert opt(argv, "-s") == "/stage/web01-fullVM" and opt(argv, "-b") == policy
    assert opt(argv, "--server") == "vc:8443" and opt(argv, "--user") == "bk"
    assert not any("s3cret" in a for a in argv) and plan.env["VCBPROXY_PASSWORD"] == "s3cret"


def test_restore_log_level_and_config_credentials(tmp_path):
    pw = tmp_path / "pw"
    pw.write_text("from-file\n")
    cfg = parse(f"[vcbproxy]\nHOST = vc1\nUSERNAME = admin\nPASSWORD_FILE = {pw}\n")
    (argv,) = restorer("-s", "/d", "-L", "0", cfg=cfg).runs
    assert "--quiet" in argv
    plan = restorer("-s", "/d", "-L", "5", cfg=cfg)
    assert plan.runs[0][:2] == ["-vv", "restore"] and "--quiet" not in plan.runs[0]
    assert "from-file" not in repr(plan.runs)


@pytest.mark.parametrize(
    "args, cls, needle",
    [
        ((), errors.UsageError, "-s DIR"),
        (("-s", "/d", "-b", "prompt"), errors.UnsupportedError, "prompt"),
        (("-s", "/d", "-b", "replace"), errors.UsageError, "keep, abort or overwrite"),
        (("-s", "/d", "extra"), errors.UsageError, "extra"),
        (("-s", "/d", "-L", "7"), errors.UsageError, "0..6"),
        (("-s", "/d", "-x"), errors.UsageError, "-x"),
    ],
)
def test_restore_refusals(args, cls, needle):
    with pytest.raises(cls) as info:
        restorer(*args)
    assert needle in str(info.value)


def test_vcbrestore_script_exits_with_vcbproxy_codes(tmp_path):
    res = script("vcbRestore", "-p", "hunter2", "-s", str(tmp_path), "-b", "prompt")
    assert res.returncode == errors.UNSUPPORTED, res.stderr
    assert "hunter2" not in res.stdout + res.stderr
    res = script("vcbRestore", "--help")
    assert res.returncode == 0 and "-b keep|abort|overwrite" in res.stdout
