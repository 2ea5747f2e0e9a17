"""The pre-command / post-command pair a backup product runs around its job.

``pre-command <vm> [fullvm]`` exports ``<vm>`` (looked up by ``VM_LOOKUP_METHOD``) into
``BACKUPROOT/<vm>-fullVM`` and then verifies the result; it exits 0 only when the export
finished without warnings *and* its manifest, files and disks check out, because a backup
product treats 0 as "back this directory up now". ``post-command <vm>`` unmounts it (removes
the directory, finished or left unfinished by a crash, and any ``_VCB-BACKUP_`` snapshot of
``<vm>`` whose owner is gone, even with no directory); running it twice is fine.

Both read the integration config (:mod:`vcbproxy.compat.config`) and run the vcbproxy
commands in-process, so their exit codes are vcbproxy's documented ones.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from vcbproxy import errors
from vcbproxy.compat.config import VcbConfig
from vcbproxy.compat.config import load as load_config
from vcbproxy.compat.vcb import invoke, mount_argv
from vcbproxy.lines import escape
from vcbproxy.staging.names import export_dir_name


def export_dir(cfg: VcbConfig, vm: str) -> Path:
    if cfg.backuproot is None:
        where = cfg.path or "the config"
        raise errors.UsageError(
            f"BACKUPROOT is not set in {where} (set VCBPROXY_CONFIG or /etc/vcbproxy/config.ini)"
        )
    # <vm> comes from the backup product's job definition; sanitise it like a server name.
    return cfg.backuproot / export_dir_name(vm)


def pre_argvs(cfg: VcbConfig, vm: str) -> list[list[str]]:
    """The vcbproxy runs of ``pre-command <vm>``: mount, then verify."""
    target = export_dir(cfg, vm)
    mount = [*mount_argv(cfg, f"{cfg.vm_lookup_method}:{vm}", target), "--quiet"]
    return [mount, ["verify", str(target)]]


def post_argvs(cfg: VcbConfig, vm: str) -> list[list[str]]:
    # -a: the VM's stale snapshots go too when the directory is gone (a pre-command that
    # was killed before it wrote one, or that another cleanup already removed).
    return [["unmount", "-r", str(export_dir(cfg, vm)), "-a", f"{cfg.vm_lookup_method}:{vm}"]]


def _parse(tool: str, args: list[str]) -> str:
    if tool == "pre-command" and len(args) == 2 and args[1].lower() != "fullvm":
        raise errors.UnsupportedError(
            f"pre-command: backup type {args[1]!r}: only fullvm is offered "
            "(file-level mounts are not)"
        )
    if not 1 <= len(args) <= (2 if tool == "pre-command" else 1) or not args[0]:
        shape = "<vm> [fullvm]" if tool == "pre-command" else "<vm>"
        raise errors.UsageError(f"usage: {tool} {shape}")
    return args[0]


def run(tool: str, args: list[str]) -> int:
    try:
        vm = _parse(tool, args)
        cfg = load_config()
        argvs = pre_argvs(cfg, vm) if tool == "pre-command" else post_argvs(cfg, vm)
    except errors.VcbProxyError as exc:
        print(f"{tool}: error: {escape(str(exc))}", file=sys.stderr)
        return exc.exit_code
    os.environ.update(cfg.environment(dict(os.environ)))
    for argv in argvs:
        code = invoke(argv)
        if code != 0:
            # A mount "done with warnings" (a skipped disk) is not a complete VM: not 0.
            print(f"{tool}: {argv[0]} {escape(vm)} failed (exit {code})", file=sys.stderr)
            return code
    return 0
