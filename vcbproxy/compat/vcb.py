"""VCB's command lines (vcbMounter, vcbVmName, vcbSnapshot, vcbCleanup, vcbRestore) onto ``vcbproxy``.

Each ``translate_*`` function is pure: VCB argv (plus the integration config) in, a
:class:`Plan` out — the ``vcbproxy`` argv lists to run and the environment they need.
:func:`run` then executes the plan in-process through :func:`vcbproxy.cli.main`, so the
exit codes and one-line errors are vcbproxy's documented ones.

Passwords: VCB took ``-p password``. We accept it, but it only ever travels in the
environment (``VCBPROXY_PASSWORD``), never in a vcbproxy argv, a log line or a hook's
environment (hooks strip ``*PASSWORD*``). The console scripts (:mod:`vcbproxy.compat.console`)
move ``-p`` into the environment and re-execute themselves without it, so the process that
runs the job never shows it; only its first moments did. The docs steer users to
``VCBPROXY_PASSWORD`` or a password file.
"""

from __future__ import annotations

import contextlib
import getopt
import io
import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

from vcbproxy import errors
from vcbproxy.cli import main
from vcbproxy.compat.config import VcbConfig
from vcbproxy.compat.config import load as load_config
from vcbproxy.compat.flags import SHORTOPTS
from vcbproxy.jobs.unmount import export_dirs_under
from vcbproxy.lines import escape
from vcbproxy.transport import HOTADD_REFUSAL, parse_chain

TOOLS = ("vcbMounter", "vcbVmName", "vcbSnapshot", "vcbCleanup", "vcbRestore")
# VCB's -L 0..6 (0 silent, 3 default, 6 most verbose) onto vcbproxy's -q / -v / -vv.
LOG_QUIET_BELOW = 2


@dataclass
class Plan:
    """What a VCB command line means: vcbproxy runs, in order, and environment to add."""

    runs: list[list[str]] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict, repr=False)
    # vcbSnapshot -f: filter 'snapshot list --json' output by this name and print SsId lines.
    find_name: str | None = None
    # vcbCleanup without -y: only show what would go.
    dry_run: bool = False


def _getopt(tool: str, args: list[str]) -> tuple[dict[str, str], list[str]]:
    try:
        pairs, rest = getopt.gnu_getopt(args, SHORTOPTS[tool])
    except getopt.GetoptError as exc:
        raise errors.UsageError(f"{exc.msg}; see {tool} --help") from exc
    return {opt: value for opt, value in pairs}, rest


def _connection(
    opts: dict[str, str], cfg: VcbConfig, base_env: dict[str, str]
) -> tuple[list[str], dict]:
    """-h/-u as vcbproxy options, -p into the environment; the config fills what is missing."""
    env = cfg.environment(base_env)
    added = {k: v for k, v in env.items() if base_env.get(k) != v}
    argv: list[str] = []
    if "-h" in opts:
        argv += ["--server", opts["-h"]]
    if "-u" in opts:
        argv += ["--user", opts["-u"]]
    if "-p" in opts:
        # An explicit -p beats a password file from the environment or config.
        added["VCBPROXY_PASSWORD"] = opts["-p"]
        added["VCBPROXY_PASSWORD_FILE"] = ""
    return argv, added


def _flag01(opts: dict[str, str], key: str) -> bool | None:
    if key not in opts:
        return None
    if opts[key] not in ("0", "1"):
        raise errors.UsageError(f"{key} takes 0 or 1, not {opts[key]!r}")
    return opts[key] == "1"


def _verbosity(opts: dict[str, str]) -> tuple[list[str], bool]:
    """-L level → (global vcbproxy flags, quiet?)."""
    if "-L" not in opts:
        return [], False
    try:
        level = int(opts["-L"])
    except ValueError:
        level = -1
    if not 0 <= level <= 6:
        raise errors.UsageError(f"-L takes a log level 0..6, not {opts['-L']!r}")
    if level >= 5:
        return ["-vv"], False
    if level == 4:
        return ["-v"], False
    return [], level < LOG_QUIET_BELOW


def _disk_format(opts: dict[str, str]) -> str | None:
    """The format -M/-F ask for; ``None`` when neither is given (the config's, or the default)."""
    # VCB: -M 1 one monolithic file per disk, -M 0 split 2 GB sparse (default); -F 1 flat.
    monolithic = _flag01(opts, "-M")
    flat = _flag01(opts, "-F")
    if flat:
        return "flat"
    if monolithic:
        return "monolithic"
    if monolithic is None and flat is None:
        return None
    return "2gbsparse"


def _mode(value: str) -> str:
    names = parse_chain(value)
    if "hotadd" in names:
        raise errors.UnsupportedError(f"-m {value}: {HOTADD_REFUSAL}")
    return ":".join(names)


def mount_argv(
    cfg: VcbConfig,
    selector: str,
    target: str | Path,
    *,
    mode: str | None = None,
    fmt: str | None = None,
) -> list[str]:
    """The ``vcbproxy mount`` argv exporting ``selector`` to ``target`` with the config's
    settings; ``mode`` and ``fmt`` (from command-line flags) win over the config's."""
    argv = [
        "mount",
        "-a",
        selector,
        "-r",
        str(target),
        "-t",
        "fullvm",
        "-m",
        mode or cfg.transport_mode or "nbdssl",
        "--format",
        fmt or cfg.export_format or "2gbsparse",
        "--preexisting-mountpoint",
        cfg.preexisting_mountpoint,
        "--preexisting-snapshot",
        cfg.preexisting_vcb_snapshot,
    ]
    if cfg.snapshot_quiesce is not None:
        argv.append("--quiesce" if cfg.snapshot_quiesce else "--no-quiesce")
    if cfg.retries is not None:
        argv += ["--retries", str(cfg.retries)]
    return argv


def translate_mounter(args: list[str], cfg: VcbConfig, env: dict[str, str]) -> Plan:
    """vcbMounter [-h host[:port]] [-u user] [-p pw] -a SELECTOR -r DIR [-t fullvm|file]
    [-m MODE] [-M 0|1] [-F 0|1] [-L 0..6]   or   vcbMounter ... -U DIR."""
    tool = "vcbMounter"
    opts, rest = _getopt(tool, args)
    if rest:
        raise errors.UsageError(f"unexpected argument {rest[0]!r}")
    conn, added = _connection(opts, cfg, env)
    verbose, quiet = _verbosity(opts)
    if "-U" in opts:
        if "-a" in opts or "-r" in opts:
            raise errors.UsageError("-U DIR unmounts; it does not go with -a or -r")
        return Plan([[*verbose, "unmount", "-r", opts["-U"], *conn]], added)
    missing = [flag for flag in ("-a", "-r") if flag not in opts]
    if missing:
        raise errors.UsageError(f"{' and '.join(missing)} required (-a SELECTOR -r DIR, or -U DIR)")
    export_type = opts.get("-t", "fullvm").lower()
    if export_type == "file":
        raise errors.UnsupportedError(
            "-t file (file-level mount of the guest file system) is not "
            "offered; use -t fullvm and restore files from the exported disks"
        )
    if export_type != "fullvm":
        raise errors.UsageError(f"-t takes fullvm or file, not {opts['-t']!r}")
    mode = _mode(opts["-m"]) if opts.get("-m") else None
    argv = [*verbose, *mount_argv(cfg, opts["-a"], opts["-r"], mode=mode, fmt=_disk_format(opts))]
    if quiet:
        argv.append("--quiet")
    return Plan([argv + conn], added)


def translate_vmname(args: list[str], cfg: VcbConfig, env: dict[str, str]) -> Plan:
    """vcbVmName [-h host] [-u user] [-p pw] -s SELECTOR [-L level]."""
    tool = "vcbVmName"
    opts, rest = _getopt(tool, args)
    if rest:
        raise errors.UsageError(f"unexpected argument {rest[0]!r}")
    if "-s" not in opts:
        raise errors.UsageError(
            "-s SELECTOR required (any, name:, ipaddr:, uuid:, moref:, powerstate:)"
        )
    conn, added = _connection(opts, cfg, env)
    verbose, _ = _verbosity(opts)
    return Plan([[*verbose, "vms", "-s", opts["-s"], *conn]], added)


def _vm_selector(vm_id: str) -> str:
    # VCB wrote "moref:vm-42" in some places and a bare "vm-42" in others; take both.
    return vm_id if ":" in vm_id else f"moref:{vm_id}"


def translate_snapshot(args: list[str], cfg: VcbConfig, env: dict[str, str]) -> Plan:
    """vcbSnapshot [-h -u -p] -c VM NAME | -d VM SSID | -f VM NAME | -l VM."""
    tool = "vcbSnapshot"
    opts, rest = _getopt(tool, args)
    actions = [flag for flag in ("-c", "-d", "-f", "-l") if flag in opts]
    if len(actions) != 1:
        raise errors.UsageError("give exactly one of -c VM NAME, -d VM SSID, -f VM NAME, -l VM")
    action = actions[0]
    wanted = 0 if action == "-l" else 1
    if len(rest) != wanted:
        what = {
            "-c": "a snapshot name",
            "-d": "an SsId",
            "-f": "a snapshot name",
            "-l": "nothing more",
        }[action]
        raise errors.UsageError(f"{action} VM takes {what}")
    conn, added = _connection(opts, cfg, env)
    verbose, _ = _verbosity(opts)
    vm = _vm_selector(opts[action])
    if action == "-c":
        return Plan([[*verbose, "snapshot", "create", "-a", vm, "-n", rest[0], *conn]], added)
    if action == "-d":
        ssid = rest[0].removeprefix("SsId:")
        return Plan([[*verbose, "snapshot", "delete", "-a", vm, ssid, *conn]], added)
    if action == "-f":
        return Plan(
            [[*verbose, "snapshot", "list", "-a", vm, "--json", *conn]], added, find_name=rest[0]
        )
    return Plan([[*verbose, "snapshot", "list", "-a", vm, *conn]], added)


def translate_cleanup(args: list[str], cfg: VcbConfig, env: dict[str, str]) -> Plan:
    """vcbCleanup [-h -u -p] [-r DIR] [-y]: unmount every export under DIR (default BACKUPROOT),
    then remove every remaining _VCB-BACKUP_ snapshot whose owner is provably gone (the sweep's
    rule, with its documented age). Without -y only list what would go."""
    tool = "vcbCleanup"
    opts, rest = _getopt(tool, args)
    if rest:
        raise errors.UsageError(f"unexpected argument {rest[0]!r}")
    conn, added = _connection(opts, cfg, env)
    verbose, _ = _verbosity(opts)
    root = Path(opts["-r"]) if "-r" in opts else cfg.backuproot
    dry_run = "-y" not in opts
    runs: list[list[str]] = []
    if root is not None and root.is_dir():
        # Each child export of BACKUPROOT; the root itself is never removed.
        exports = [d for d in export_dirs_under(root) if d != root]
        runs += [[*verbose, "unmount", "-r", str(d), *conn] for d in exports]
    # Not --older-than 0: a snapshot whose owner cannot be checked may be another proxy's job.
    sweep = [*verbose, "snapshot", "sweep", *conn]
    if dry_run:
        runs = [sweep + ["--dry-run"]] + [["#would-unmount", r[r.index("-r") + 1]] for r in runs]
    else:
        runs.append(sweep)
    return Plan(runs, added, dry_run=dry_run)


# vcbRestore -b: VCB's behaviours when the VM exists. "abort" is our "keep" (refuse, touch
# nothing); "prompt" (VCB's default) asks on the console, which a backup product's job cannot
# answer, so it is refused rather than guessed.
RESTORE_BEHAVIOURS = {"keep": "keep", "abort": "keep", "overwrite": "overwrite"}


def translate_restore(args: list[str], cfg: VcbConfig, env: dict[str, str]) -> Plan:
    """vcbRestore [-h host[:port]] [-u user] [-p pw] -s DIR [-b keep|abort|overwrite] [-L 0..6]:
    put the VM exported in DIR back under its own name on its own datastore (the catalog's)."""
    tool = "vcbRestore"
    opts, rest = _getopt(tool, args)
    if rest:
        raise errors.UsageError(f"unexpected argument {rest[0]!r}")
    if "-s" not in opts:
        raise errors.UsageError("-s DIR required (the directory vcbMounter exported to)")
    behaviour = opts.get("-b", "keep").lower()
    if behaviour == "prompt":
        raise errors.UnsupportedError(
            "-b prompt asks on the console, which vcbproxy never does; "
            "give -b keep (or abort) to refuse an existing VM, -b overwrite to replace it"
        )
    if behaviour not in RESTORE_BEHAVIOURS:
        raise errors.UsageError(f"-b takes keep, abort or overwrite, not {opts['-b']!r}")
    conn, added = _connection(opts, cfg, env)
    verbose, quiet = _verbosity(opts)
    argv = [*verbose, "restore", "-s", opts["-s"], "-b", RESTORE_BEHAVIOURS[behaviour]]
    if quiet:
        argv.append("--quiet")
    return Plan([argv + conn], added)


TRANSLATORS = {
    "vcbMounter": translate_mounter,
    "vcbVmName": translate_vmname,
    "vcbSnapshot": translate_snapshot,
    "vcbCleanup": translate_cleanup,
    "vcbRestore": translate_restore,
}


def invoke(argv: list[str]) -> int:
    """Run one vcbproxy command in-process; its exit code (errors printed by vcbproxy's main)."""
    try:
        main(argv)
    except SystemExit as exc:
        code = exc.code
        return code if isinstance(code, int) else (0 if code is None else 1)
    return 0


def _find(argv: list[str], name: str) -> int:
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        code = invoke(argv)
    if code != 0:
        return code
    found = [s["ssid"] for s in json.loads(buf.getvalue() or "[]") if s["name"] == name]
    for ssid in found:
        print(f"SsId:{ssid}")
    if not found:
        print(f"vcbSnapshot: error: no snapshot named {name!r}", file=sys.stderr)
        return errors.NOT_FOUND
    return 0


def execute(plan: Plan) -> int:
    os.environ.update(plan.env)
    if os.environ.get("VCBPROXY_PASSWORD_FILE") == "":
        del os.environ["VCBPROXY_PASSWORD_FILE"]  # cleared because -p was given
    codes = []
    for argv in plan.runs:
        if argv[0] == "#would-unmount":
            print(f"would unmount {argv[1]}")
            continue
        codes.append(_find(argv, plan.find_name) if plan.find_name is not None else invoke(argv))
    if plan.dry_run:
        print("vcbCleanup: nothing removed; run with -y to remove the above", file=sys.stderr)
    return errors.worst(codes)


def usage(tool: str) -> str:
    return (TRANSLATORS[tool].__doc__ or "").strip() + (
        "\n\nPasswords: prefer VCBPROXY_PASSWORD or VCBPROXY_PASSWORD_FILE (or PASSWORD_FILE in the config) "
        "to -p, which other local users can see in 'ps' until the tool has restarted without it."
        "\nExit codes: " + ", ".join(f"{c} {n}" for c, n in errors.EXIT_CODES.items())
    )


def run(tool: str, args: list[str]) -> int:
    """Translate and execute one VCB tool invocation; the exit code."""
    if tool not in TRANSLATORS:
        print(
            f"vcbproxy-compat: unknown tool {tool!r}; use one of {', '.join(TOOLS)}",
            file=sys.stderr,
        )
        return errors.USAGE
    if args in (["--help"], ["-?"]) or not args and tool != "vcbCleanup":
        print(usage(tool))
        return 0 if args else errors.USAGE
    try:
        plan = TRANSLATORS[tool](args, load_config(), dict(os.environ))
    except errors.VcbProxyError as exc:
        print(f"{tool}: error: {escape(str(exc))}", file=sys.stderr)
        return exc.exit_code
    return execute(plan)
