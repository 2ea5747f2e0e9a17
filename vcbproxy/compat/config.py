"""VCB's integration config (``config.js`` keys) read from an INI-like file.

VCB kept its settings as ``KEY="value"`` lines; we accept exactly that, with or without an
``[section]`` header, ``#``/``;`` comments and optional quotes, so an administrator can carry
an old file over. The file is ``$VCBPROXY_CONFIG`` or ``/etc/vcbproxy/config.ini``.

The config only supplies defaults: command-line flags and ``VCBPROXY_*`` variables set by
the caller win, which :meth:`VcbConfig.environment` implements by never overwriting them.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from vcbproxy import errors
from vcbproxy.transport import HOTADD_REFUSAL, parse_chain
from vcbproxy.vmdk.writers import FORMATS

log = logging.getLogger(__name__)

CONFIG_ENV = "VCBPROXY_CONFIG"
DEFAULT_PATH = Path("/etc/vcbproxy/config.ini")

LOOKUP_METHODS = ("name", "ipaddr", "uuid", "moref")
POLICIES = ("delete", "fail")
TRUE = ("1", "true", "yes", "on")
FALSE = ("0", "false", "no", "off")

KEYS = (
    "BACKUPROOT",
    "HOST",
    "PORT",
    "USERNAME",
    "PASSWORD",
    "PASSWORD_FILE",
    "VM_LOOKUP_METHOD",
    "TRANSPORT_MODE",
    "PREEXISTING_MOUNTPOINT",
    "PREEXISTING_VCB_SNAPSHOT",
    "SNAPSHOT_QUIESCE",
    "RETRIES",
    "THUMBPRINT",
    "EXPORT_FORMAT",
)


@dataclass
class VcbConfig:
    """The parsed settings; ``None`` means "not set, use vcbproxy's default"."""

    path: Path | None = None
    backuproot: Path | None = None
    host: str | None = None
    port: int | None = None
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    password_file: str | None = None
    vm_lookup_method: str = "name"
    transport_mode: str | None = None
    preexisting_mountpoint: str = "fail"
    preexisting_vcb_snapshot: str = "fail"
    snapshot_quiesce: bool | None = None
    retries: int | None = None
    thumbprint: str | None = None
    export_format: str | None = None

    @property
    def server(self) -> str | None:
        if not self.host:
            return None
        return f"{self.host}:{self.port}" if self.port else self.host

    def environment(self, env: dict[str, str]) -> dict[str, str]:
        """``env`` plus the connection settings this config supplies and ``env`` lacks.

        A password given in the caller's environment (or a password file) outranks one
        in the config, so a shared config file never overrides a per-job secret.
        """
        out = dict(env)
        pairs = {
            "VCBPROXY_SERVER": self.server,
            "VCBPROXY_USER": self.username,
            "VCBPROXY_THUMBPRINT": self.thumbprint,
        }
        for key, value in pairs.items():
            if value and not out.get(key):
                out[key] = value
        has_secret = out.get("VCBPROXY_PASSWORD") is not None or out.get("VCBPROXY_PASSWORD_FILE")
        if not has_secret:
            if self.password_file:
                out["VCBPROXY_PASSWORD_FILE"] = self.password_file
            elif self.password is not None:
                out["VCBPROXY_PASSWORD"] = self.password
        return out


def config_path(env: Mapping[str, str] | None = None) -> Path:
    found = (os.environ if env is None else env).get(CONFIG_ENV)
    return Path(found) if found else DEFAULT_PATH


def load(path: Path | None = None, env: Mapping[str, str] | None = None) -> VcbConfig:
    """Read the config; a missing default file is an empty config, a missing named one an error."""
    environ = os.environ if env is None else env
    explicit = path is not None or bool(environ.get(CONFIG_ENV))
    path = path if path is not None else config_path(environ)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        if explicit:
            raise errors.UsageError(f"config file {path} does not exist ({CONFIG_ENV})") from exc
        return VcbConfig()
    except OSError as exc:
        raise errors.UsageError(f"cannot read config file {path}: {exc.strerror or exc}") from exc
    return parse(text, path)


def parse(text: str, path: Path | None = None) -> VcbConfig:
    """Parse ``KEY="value"`` / ``KEY = value`` lines into a :class:`VcbConfig`."""
    where = str(path) if path else "config"
    cfg = VcbConfig(path=path)
    for lineno, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line[0] in "#;" or (line.startswith("[") and line.endswith("]")):
            continue
        key, sep, value = line.partition("=")
        if not sep:
            raise errors.UsageError(f'{where}:{lineno}: expected KEY="value", got {line!r}')
        key = key.strip().upper()
        value = _unquote(value.strip())
        if key not in KEYS:
            # VCB's config.js had many keys that mean nothing here; say so, but keep going.
            log.warning("%s:%d: unknown key %s ignored", where, lineno, key)
            continue
        _apply(cfg, key, value, f"{where}:{lineno}")
    return cfg


def _unquote(value: str) -> str:
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
        return value[1:-1]
    # An unquoted value may carry a trailing comment, as shell-like files do.
    return value.split(" #", 1)[0].rstrip()


def _choice(value: str, choices: tuple[str, ...], key: str, where: str) -> str:
    low = value.lower()
    if low not in choices:
        raise errors.UsageError(f"{where}: {key}={value!r}: use one of {', '.join(choices)}")
    return low


def _int(value: str, key: str, where: str, *, low: int, high: int) -> int:
    try:
        number = int(value)
    except ValueError:
        number = low - 1
    if not low <= number <= high:
        raise errors.UsageError(f"{where}: {key}={value!r}: expected a whole number {low}..{high}")
    return number


def _apply(cfg: VcbConfig, key: str, value: str, where: str) -> None:
    if value == "":
        return  # an empty value means "not set", as VCB's template left them
    if key == "BACKUPROOT":
        cfg.backuproot = Path(value)
    elif key == "HOST":
        cfg.host = value
    elif key == "PORT":
        cfg.port = _int(value, key, where, low=1, high=65535)
    elif key == "USERNAME":
        cfg.username = value
    elif key == "PASSWORD":
        cfg.password = value
    elif key == "PASSWORD_FILE":
        cfg.password_file = value
    elif key == "VM_LOOKUP_METHOD":
        cfg.vm_lookup_method = _choice(value, LOOKUP_METHODS, key, where)
    elif key == "TRANSPORT_MODE":
        # VCB allowed a chain like "san:nbd"; vcbproxy's -m takes the same chains.
        try:
            names = parse_chain(value)
        except errors.UsageError as exc:
            raise errors.UsageError(f"{where}: {key}={value!r}: {exc}") from exc
        if "hotadd" in names:
            raise errors.UsageError(f"{where}: {key}={value!r}: {HOTADD_REFUSAL}")
        cfg.transport_mode = ":".join(names)
    elif key == "PREEXISTING_MOUNTPOINT":
        cfg.preexisting_mountpoint = _choice(value, POLICIES, key, where)
    elif key == "PREEXISTING_VCB_SNAPSHOT":
        cfg.preexisting_vcb_snapshot = _choice(value, POLICIES, key, where)
    elif key == "SNAPSHOT_QUIESCE":
        low = value.lower()
        if low not in TRUE + FALSE:
            raise errors.UsageError(f"{where}: SNAPSHOT_QUIESCE={value!r}: use true or false")
        cfg.snapshot_quiesce = low in TRUE
    elif key == "RETRIES":
        cfg.retries = _int(value, key, where, low=0, high=100)
    elif key == "THUMBPRINT":
        cfg.thumbprint = value
    elif key == "EXPORT_FORMAT":
        cfg.export_format = _choice(value, FORMATS, key, where)
