"""Pure logic of the vSphere client: selectors, file URLs, thumbprints, server strings, names."""

from __future__ import annotations

import hashlib
import urllib.parse

import pytest

from vcbproxy import errors
from vcbproxy.models import DatastorePath
from vcbproxy.selectors import Selector, parse_selector
from vcbproxy.vsphere.inventory import unescape_name
from vcbproxy.vsphere.session import (
    build_file_url,
    cert_digest,
    normalise_thumbprint,
    parse_server,
    pretty_thumbprint,
)


@pytest.mark.parametrize(
    "text, expected",
    [
        ("any", Selector("any", "")),
        ("name:web 01", Selector("name", "web 01")),
        ("name:a:b", Selector("name", "a:b")),  # only the first colon splits
        ("name: padded ", Selector("name", " padded ")),  # display names are exact
        ("ipaddr:10.0.0.5", Selector("ipaddr", "10.0.0.5")),
        ("ipaddr: host.example ", Selector("ipaddr", "host.example")),
        (
            "uuid:4231AB12-0000-1111-2222-333344445555",
            Selector("uuid", "4231ab12000011112222333344445555"),
        ),
        ("moref:vm-42", Selector("moref", "vm-42")),
        ("powerstate:ON", Selector("powerstate", "on")),
        ("powerstate:off", Selector("powerstate", "off")),
        ("NAME:Case", Selector("name", "Case")),  # the kind is case-insensitive, the value not
    ],
)
def test_parse_valid(text, expected):
    assert parse_selector(text) == expected


@pytest.mark.parametrize(
    "text", ["", "web01", "color:red", "name:", "moref:  ", "powerstate:standby", "any:thing", ":x"]
)
def test_parse_invalid_is_usage_error_listing_kinds(text):
    with pytest.raises(errors.UsageError) as info:
        parse_selector(text)
    assert info.value.exit_code == errors.USAGE
    if text not in ("powerstate:standby",):
        for kind in ("any", "name:", "ipaddr:", "uuid:", "moref:", "powerstate:"):
            assert kind in str(info.value)


def test_selector_str_round_trips():
    for text in ("any", "name:x y", "moref:vm-1", "powerstate:on"):
        assert str(parse_selector(text)) == text


@pytest.mark.parametrize(
    "escaped, plain",
    [
        ("a%2fb", "a/b"),
        ("a%2Fb", "a/b"),
        ("100%25", "100%"),
        ("x%5cy", "x\\y"),
        ("%252f", "%2f"),  # one level only: an escaped '%' followed by '2f' stays literal
        ("plain", "plain"),
        ("50%", "50%"),
        ("ünï", "ünï"),
    ],
)
def test_unescape_name(escaped, plain):
    assert unescape_name(escaped) == plain


@pytest.mark.parametrize(
    "server, expected",
    [
        ("vc.example", ("vc.example", 443, "/sdk")),
        ("vc.example:8443", ("vc.example", 8443, "/sdk")),
        ("https://vc.example:9443/sdk", ("vc.example", 9443, "/sdk")),
        ("https://vc.example/sdk/", ("vc.example", 443, "/sdk")),
        ("[::1]:4443", ("::1", 4443, "/sdk")),
    ],
)
def test_parse_server(server, expected):
    assert parse_server(server) == expected


@pytest.mark.parametrize(
    "server", ["", "http://vc.example/sdk", "vc.example:notaport", "https://:443"]
)
def test_parse_server_rejects(server):
    with pytest.raises(errors.UsageError):
        parse_server(server)


def test_thumbprint_normalisation_and_digest():
    der = b"certificate bytes"
    sha256 = hashlib.sha256(der).hexdigest()
    sha1 = hashlib.sha1(der).hexdigest()  # noqa: S324
    assert normalise_thumbprint(pretty_thumbprint(sha256)) == sha256
    assert normalise_thumbprint(sha1.upper()) == sha1
    assert normalise_thumbprint(None) is None
    assert cert_digest(der, 64) == sha256
    assert cert_digest(der, 40) == sha1
    assert pretty_thumbprint("abcd01") == "AB:CD:01"
    for bad in ("zz" * 32, "ab" * 31, "ab:cd"):
        with pytest.raises(errors.UsageError):
            normalise_thumbprint(bad)


def test_file_url_quotes_path_and_names_datacenter_and_datastore():
    url = build_file_url(
        "vc.example",
        443,
        DatastorePath.parse("[data store 1] vm #1/disk%1.vmdk"),
        scheme="https",
        datacenter="DC 1/x",
    )
    parts = urllib.parse.urlsplit(url)
    assert parts.scheme == "https" and parts.netloc == "vc.example:443"
    assert parts.path == "/folder/vm%20%231/disk%251.vmdk"
    assert urllib.parse.unquote(parts.path) == "/folder/vm #1/disk%1.vmdk"
    assert urllib.parse.parse_qs(parts.query) == {"dcPath": ["DC 1/x"], "dsName": ["data store 1"]}
    assert build_file_url(
        "::1", 80, DatastorePath("ds", "a"), scheme="http", datacenter="d"
    ).startswith("http://[::1]:80/folder/a?")
