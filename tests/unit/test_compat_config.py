"""VCB integration config: VCB's KEY="value" syntax, validation, and how it fills the environment."""

from __future__ import annotations

from pathlib import Path

import pytest

from vcbproxy import errors
from vcbproxy.compat import config

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "config.ini"


def test_vcb_style_lines_without_a_section():
    cfg = config.parse(
        'BACKUPROOT="/mnt/stage"\nHOST="vc.example"\nPORT="8443"\nUSERNAME=\'bk\'\n'
        '# comment\n; other comment\n\nVM_LOOKUP_METHOD="ipaddr"\nTRANSPORT_MODE="san:nbdssl"\n'
        'PREEXISTING_MOUNTPOINT="delete"\nPREEXISTING_VCB_SNAPSHOT="DELETE"\n'
        'SNAPSHOT_QUIESCE="no"\nRETRIES=3\nEXPORT_FORMAT="flat"\nTHUMBPRINT="AB:CD"\n'
    )
    assert cfg.backuproot == Path("/mnt/stage")
    assert cfg.server == "vc.example:8443"
    assert cfg.username == "bk"
    assert cfg.vm_lookup_method == "ipaddr"
    assert cfg.transport_mode == "san:nbdssl"
    assert (cfg.preexisting_mountpoint, cfg.preexisting_vcb_snapshot) == ("delete", "delete")
    assert cfg.snapshot_quiesce is False
    assert cfg.retries == 3
    assert cfg.export_format == "flat"
    assert cfg.thumbprint == "AB:CD"


def test_ini_section_spaces_and_trailing_comments_are_accepted():
    cfg = config.parse("[vcbproxy]\n  host = vc01   # the vCenter\nusername = admin\n")
    assert cfg.server == "vc01"
    assert cfg.username == "admin"


def test_empty_values_mean_defaults():
    cfg = config.parse('PORT=""\nTRANSPORT_MODE=""\nSNAPSHOT_QUIESCE=""\n')
    assert cfg.port is None and cfg.transport_mode is None and cfg.snapshot_quiesce is None
    assert cfg.vm_lookup_method == "name" and cfg.preexisting_mountpoint == "fail"


@pytest.mark.parametrize(
    "line, needle",
    [
        ('VM_LOOKUP_METHOD="dns"', "name, ipaddr, uuid, moref"),
        ('PREEXISTING_MOUNTPOINT="keep"', "delete, fail"),
        ('TRANSPORT_MODE="hotadd"', "hotadd"),
        ('TRANSPORT_MODE="san:carrier-pigeon"', "TRANSPORT_MODE"),
        ('PORT="99999"', "1..65535"),
        ('RETRIES="many"', "RETRIES"),
        ('SNAPSHOT_QUIESCE="maybe"', "true or false"),
        ('EXPORT_FORMAT="vhd"', "2gbsparse"),
        ("just words", 'KEY="value"'),
    ],
)
def test_bad_values_are_usage_errors_naming_file_and_line(line, needle):
    with pytest.raises(errors.UsageError) as info:
        config.parse(f"# first\n{line}\n", Path("/etc/x.ini"))
    assert info.value.exit_code == errors.USAGE
    assert "/etc/x.ini:2" in str(info.value) and needle in str(info.value)


def test_unknown_keys_are_warned_about_and_ignored(caplog):
    cfg = config.parse('HOST="a"\nLEGACY_VCB_THING="1"\n')
    assert cfg.host == "a"
    assert "LEGACY_VCB_THING" in caplog.text


def test_environment_fills_only_what_the_caller_did_not_set():
    cfg = config.parse('HOST="h"\nPORT=444\nUSERNAME="u"\nPASSWORD="from-config"\nTHUMBPRINT="T"\n')
    env = cfg.environment({"VCBPROXY_USER": "caller"})
    assert env["VCBPROXY_SERVER"] == "h:444"
    assert env["VCBPROXY_USER"] == "caller"
    assert env["VCBPROXY_PASSWORD"] == "from-config"
    assert env["VCBPROXY_THUMBPRINT"] == "T"
    # A caller's own secret (variable or file) beats the config's.
    assert cfg.environment({"VCBPROXY_PASSWORD": "mine"})["VCBPROXY_PASSWORD"] == "mine"
    assert "VCBPROXY_PASSWORD" not in cfg.environment({"VCBPROXY_PASSWORD_FILE": "/f"})


def test_password_file_outranks_password_in_the_config():
    cfg = config.parse('PASSWORD="p"\nPASSWORD_FILE="/etc/vcbproxy/pw"\n')
    env = cfg.environment({})
    assert env["VCBPROXY_PASSWORD_FILE"] == "/etc/vcbproxy/pw" and "VCBPROXY_PASSWORD" not in env


def test_load_from_env_path_and_missing_files(tmp_path):
    path = tmp_path / "c.ini"
    path.write_text('BACKUPROOT="/b"\n')
    assert config.load(env={"VCBPROXY_CONFIG": str(path)}).backuproot == Path("/b")
    with pytest.raises(errors.UsageError, match="does not exist"):
        config.load(env={"VCBPROXY_CONFIG": str(tmp_path / "nope.ini")})
    assert config.config_path({}) == config.DEFAULT_PATH


def test_missing_default_file_is_an_empty_config(tmp_path, monkeypatch):
    monkeypatch.setattr(config, "DEFAULT_PATH", tmp_path / "absent.ini")
    cfg = config.load(env={})
    assert cfg.backuproot is None and cfg.host is None


def test_the_shipped_example_parses():
    cfg = config.load(EXAMPLE, env={})
    assert cfg.backuproot == Path("/var/lib/vcbproxy/staging")
    assert cfg.password_file == "/etc/vcbproxy/password" and cfg.password is None
    assert cfg.transport_mode == "nbdssl" and cfg.retries == 5
