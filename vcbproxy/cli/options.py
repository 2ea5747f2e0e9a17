"""Option bundles shared by commands (sqlite-utils style decorators)."""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass

import click

from vcbproxy import errors
from vcbproxy.cli.paths import WorkingDirPath
from vcbproxy.jobs import inventory
from vcbproxy.jobs.connection import read_password
from vcbproxy.models import ServerSpec, VmRef
from vcbproxy.selectors import VALID as SELECTOR_HELP
from vcbproxy.selectors import Selector, parse_selector
from vcbproxy.transport import HttpOptions, ModeOptions, NfcOptions, SanOptions, SshOptions


def server_options(func):
    """--server/--user/--password-file/--thumbprint/--ca-file/--timeout/--keepalive → a
    ServerSpec factory.

    The command receives ``server``: a callable returning a ServerSpec, so the password is
    only read (or prompted for) when the command really connects.
    """

    @click.option(
        "--server",
        envvar="VCBPROXY_SERVER",
        metavar="HOST[:PORT]",
        help="vCenter or ESXi host. [env: VCBPROXY_SERVER]",
    )
    @click.option(
        "-u",
        "--user",
        envvar="VCBPROXY_USER",
        metavar="USER",
        help="User name. [env: VCBPROXY_USER]",
    )
    @click.option(
        "--password-file",
        envvar="VCBPROXY_PASSWORD_FILE",
        metavar="FILE",
        type=WorkingDirPath(dir_okay=False),
        help="File whose first line is the password. Otherwise VCBPROXY_PASSWORD, or a prompt on a "
        "terminal. Never on the command line. [env: VCBPROXY_PASSWORD_FILE]",
    )
    @click.option(
        "--thumbprint",
        envvar="VCBPROXY_THUMBPRINT",
        metavar="HEX",
        help="Pin the server's TLS certificate by its SHA-1 or SHA-256 fingerprint instead of "
        "verifying it against the system CA store. [env: VCBPROXY_THUMBPRINT]",
    )
    @click.option(
        "--ca-file",
        envvar="VCBPROXY_CA_FILE",
        type=WorkingDirPath(dir_okay=False, exists=True),
        help="CA bundle (PEM) to verify the server with. [env: VCBPROXY_CA_FILE]",
    )
    @click.option(
        "--timeout",
        type=float,
        default=60.0,
        show_default=True,
        help="Connection and request timeout in seconds.",
    )
    @click.option(
        "--keepalive",
        envvar="VCBPROXY_KEEPALIVE",
        type=click.FloatRange(min=0),
        default=300.0,
        show_default=True,
        metavar="SECONDS",
        help="Renew the session after this long without a call (0: never); an expired "
        "session is logged in again in any case. [env: VCBPROXY_KEEPALIVE]",
    )
    @functools.wraps(func)
    def wrapper(
        *args, server, user, password_file, thumbprint, ca_file, timeout, keepalive, **kwargs
    ):
        def spec() -> ServerSpec:
            password = read_password(password_file=password_file, prompt_for=f"{user}@{server}")
            return ServerSpec(
                server=server or "",
                user=user or "",
                password=password,
                thumbprint=thumbprint,
                ca_file=ca_file,
                timeout=timeout,
                keepalive=keepalive,
            )

        return func(*args, server=spec, **kwargs)

    return wrapper


@dataclass(frozen=True)
class VmFlag:
    """``-a/--vm SELECTOR``, parsed when the command starts and resolved once it has a
    session (govc's VirtualMachineFlag)."""

    selector: Selector

    def resolve(self, session) -> VmRef:
        """The one VM the selector names; NotFoundError or AmbiguousError (exit 11) otherwise."""
        return inventory.resolve_vm(session, self.selector)


def vm_option(func=None, *, required: bool = True, help: str = SELECTOR_HELP):  # noqa: A002
    """Adds ``-a/--vm SELECTOR``; the command receives ``vm``, a :class:`VmFlag` (None when
    ``required=False`` and not given). A bad selector is a usage error (exit 2) before
    anything connects. ``@vm_option`` or ``@vm_option(required=False, help=...)``."""

    def decorate(func):
        @click.option("-a", "--vm", "vm_text", required=required, metavar="SELECTOR", help=help)
        @functools.wraps(func)
        def wrapper(*args, vm_text: str | None, **kwargs):
            vm = VmFlag(parse_selector(vm_text)) if vm_text else None
            return func(*args, vm=vm, **kwargs)

        return wrapper

    return decorate(func) if func is not None else decorate


def output_options(func):
    @click.option(
        "--json", "json_output", is_flag=True, help="Machine-readable output: JSON (lines)."
    )
    @click.option("-q", "--quiet", is_flag=True, help="No progress output.")
    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        return func(*args, **kwargs)

    return wrapper


def progress_mode(json_output: bool, quiet: bool) -> str | None:
    if json_output:
        return "json"
    if quiet:
        return "quiet"
    return None


def transport_options(func):
    """The options of every transport (-m): the command receives ``transport``, a function
    of the ServerSpec returning the ModeOptions (the SSH host defaults to the server's)."""

    @click.option(
        "--nbd-port",
        type=int,
        default=80,
        show_default=True,
        help="Plain-HTTP file service port for -m nbd.",
    )
    @click.option(
        "--retries",
        type=int,
        default=5,
        show_default=True,
        help="Resume attempts for a dropped transfer (with backoff).",
    )
    @click.option(
        "--san-map",
        multiple=True,
        metavar="DS=PATH",
        help="Where a datastore is visible locally, for -m san: by name, or by its "
        "ds:///vmfs/volumes/<uuid>/ URL (asked of the server). Repeatable.",
    )
    @click.option("--ssh-host", metavar="HOST", help="ESXi host for -m ssh [default: the server].")
    @click.option("--ssh-port", type=int, default=22, show_default=True)
    @click.option("--ssh-user", default="root", show_default=True)
    @click.option(
        "--ssh-key",
        type=WorkingDirPath(dir_okay=False, exists=True),
        help="Private key for -m ssh (else the SSH agent; a password only from VCBPROXY_SSH_PASSWORD).",
    )
    @click.option(
        "--ssh-known-hosts",
        type=WorkingDirPath(dir_okay=False),
        help="known_hosts file to check the host key [default: ~/.ssh/known_hosts].",
    )
    @click.option(
        "--ssh-fingerprint", metavar="SHA256:...", help="Pin the SSH host key by fingerprint."
    )
    @click.option(
        "--ssh-accept-new", is_flag=True, help="Accept and record an unknown SSH host key."
    )
    @click.option(
        "--ssh-root", default="/vmfs/volumes", show_default=True, help="Datastore root on the host."
    )
    @click.option(
        "--ssh-channels",
        type=click.IntRange(1, 16),
        default=1,
        show_default=True,
        help="Parallel SSH channels per file.",
    )
    @click.option(
        "--ssh-reader",
        type=click.Choice(["auto", "dd"]),
        default="auto",
        show_default=True,
        help="How the host prints file ranges. auto: a short script for the host's "
        "Python (current ESXi releases ship one) that sends zero blocks as "
        "5-byte records, else dd, else tail|head (busybox); dd: never run a "
        "script on the host.",
    )
    @functools.wraps(func)
    def wrapper(
        *args,
        nbd_port,
        retries,
        san_map,
        ssh_host,
        ssh_port,
        ssh_user,
        ssh_key,
        ssh_known_hosts,
        ssh_fingerprint,
        ssh_accept_new,
        ssh_root,
        ssh_channels,
        ssh_reader,
        **kwargs,
    ):
        def build(spec: ServerSpec) -> ModeOptions:
            mapping = {}
            for item in san_map:
                ds, sep, path = item.partition("=")
                if not sep or not ds or not path:
                    raise errors.UsageError(f"bad --san-map {item!r}: use DATASTORE=PATH")
                mapping[ds] = path
            return ModeOptions(
                http=HttpOptions(timeout=spec.timeout, retries=retries, nbd_port=nbd_port),
                san=SanOptions(san_map=mapping),
                ssh=SshOptions(
                    host=ssh_host or spec.host,
                    port=ssh_port,
                    user=ssh_user,
                    key=ssh_key,
                    password=os.environ.get("VCBPROXY_SSH_PASSWORD"),
                    known_hosts=ssh_known_hosts,
                    fingerprint=ssh_fingerprint,
                    accept_new=ssh_accept_new,
                    root=ssh_root,
                    channels=ssh_channels,
                    reader=ssh_reader,
                    timeout=spec.timeout,
                    retries=retries,
                ),
                nfc=NfcOptions(timeout=spec.timeout, retries=retries),
            )

        return func(*args, transport=build, **kwargs)

    return wrapper
