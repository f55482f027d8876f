"""The names the web view answers to (web/hosts.py): a rebound name never passes."""

from __future__ import annotations

import datetime

import pytest

from tailhub.client._tls_init import cert_pem, make_ca, make_leaf
from tailhub.daemon.listeners import ListenAddress, TlsMaterial
from tailhub.daemon.web.hosts import HostCheck, certificate_names
from tailhub.daemon.web.settings import WebSettings


def loopback(port: int = 8080) -> HostCheck:
    return HostCheck(WebSettings(ListenAddress("127.0.0.1", port), None), port)


def with_certificate(host: str, names: list[str], port: int = 8443) -> HostCheck:
    now = datetime.datetime.now(datetime.timezone.utc)
    later = now + datetime.timedelta(days=1)
    ca_key, ca = make_ca("test CA", now, later)
    _, leaf = make_leaf(ca_key, ca, names, now, later)
    tls = TlsMaterial(cert_pem(leaf), b"", None)
    return HostCheck(WebSettings(ListenAddress(host, port), tls), port)


@pytest.mark.parametrize(
    "host", ["127.0.0.1:8080", "localhost:8080", "LocalHost.:8080", "[::1]:8080", "[0::1]:8080"]
)
def test_a_loopback_listener_answers_to_its_loopback_names_at_its_port(host: str) -> None:
    assert loopback().allows(host)


@pytest.mark.parametrize(
    "host",
    [
        None,
        "",
        "evil.example:8080",
        "evil.example",
        "127.0.0.1",  # the port left out: the browser was sent to another one
        "127.0.0.1:80",
        "127.0.0.1:08080",
        "localhost:8080.evil.example",
        "127.0.0.2:8080",
        "[::1]x:8080",
        "[::1:8080",
        "::1",
        "localhost:8080 ",
        "a" * 400,
    ],
)
def test_any_other_host_is_refused(host: str | None) -> None:
    assert not loopback().allows(host)


def test_the_default_port_may_be_left_out() -> None:
    check = loopback(80)
    assert check.allows("localhost")
    assert check.allows("localhost:80")
    assert not check.allows("evil.example")


def test_a_tls_listener_answers_to_its_address_and_its_certificates_names() -> None:
    check = with_certificate("10.1.2.3", ["logs.example.org", "192.0.2.7", "2001:db8::1"])
    for host in (
        "10.1.2.3:8443",
        "logs.example.org:8443",
        "LOGS.example.org:8443",
        "192.0.2.7:8443",
        "[2001:db8::1]:8443",
    ):
        assert check.allows(host), host
    for host in ("evil.example:8443", "localhost:8443", "logs.example.org:8080", "10.1.2.3"):
        assert not check.allows(host), host


def test_a_wildcard_listener_answers_to_its_certificates_names_never_to_the_wildcard() -> None:
    check = with_certificate("0.0.0.0", ["localhost", "127.0.0.1", "box.example"])  # noqa: S104
    assert check.allows("box.example:8443")
    assert check.allows("127.0.0.1:8443")
    assert not check.allows("0.0.0.0:8443")
    assert not check.allows("evil.example:8443")


def test_a_certificate_without_names_gives_none() -> None:
    assert certificate_names(b"not a certificate") == set()
