"""Task image URL -> RGB pixels, the way Label Studio serves them, safely.

Label Studio tasks carry image URLs in several shapes:

* ``http(s)://...``: fetched directly if the image host policy allows the host
  (``labelstudio.host_policy``, RPSAM2_ALLOWED_IMAGE_HOSTS: by default public hosts and Label
  Studio, never internal addresses); the API token is sent only to the Label Studio host itself
  (never to a third-party server an annotator's task happens to point at).
* ``/data/upload/<project>/<file>``: uploaded through Label Studio; read from ``RPSAM2_UPLOAD_DIR``
  when the backend shares Label Studio's media volume, otherwise fetched from Label Studio.
* ``/data/local-files/?d=<path>``: Label Studio "local files" storage; read from
  ``LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT``, refusing anything that leaves that root.
* other ``/...`` paths (Label Studio's storage proxy / resolve endpoints): fetched from Label Studio.
* ``s3://``, ``gs://``, ...: refused with an explanation; the backend holds no cloud credentials.

Downloads are streamed and capped, and the pixel count is checked from the header before the
full decode, so a hostile or mistaken task cannot exhaust the worker's memory.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import re
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit, urlunsplit

import cv2
import numpy as np
import requests
from PIL import Image
from urllib3.exceptions import ReadTimeoutError

from rpsam2_backend.core.errors import BadRequest, ImageError
from rpsam2_backend.core.settings import Settings
from rpsam2_backend.labelstudio.host_policy import BlockedDestination, HostPolicy, guarded_session

log = logging.getLogger(__name__)

UPLOAD_PREFIX = "/data/upload/"
LOCAL_FILES_PREFIX = "/data/local-files/"
CLOUD_SCHEMES = {
    "s3", "gs", "gcs", "azure-blob", "azure", "az", "wasb", "wasbs", "abfs", "abfss", "minio", "r2",
}
_CHUNK = 1 << 16
# Query parameters that carry credentials (pre-signed URLs): their values never reach a message.
_SECRET_PARAM = re.compile(r"sig|token|key|credential|auth|password|secret|policy", re.IGNORECASE)


@dataclass(frozen=True)
class LoadedImage:
    rgb: np.ndarray  # (H, W, 3) uint8
    sha256: str  # hex digest of the raw file bytes (what was read, for logs; the cache keys pixels)
    source: str  # where the bytes came from (a path or a redacted URL), for logs


def redact_url(url: str) -> str:
    """The URL with user:password and credential-like query values masked."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<malformed url>"
    netloc = parts.netloc
    if "@" in netloc:
        netloc = "***@" + netloc.rsplit("@", 1)[1]
    query = "&".join(
        f"{key}=***" if _SECRET_PARAM.search(key) else (f"{key}={value}" if sep else key)
        for key, sep, value in (pair.partition("=") for pair in parts.query.split("&") if pair)
    )
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def _origin(url: str) -> tuple[str, int | None]:
    parts = urlsplit(url)
    port = parts.port or {"http": 80, "https": 443}.get(parts.scheme.lower())
    return (parts.hostname or "").lower(), port


class ImageLoader:
    def __init__(self, settings: Settings) -> None:
        self.label_studio_url = settings.label_studio.url.rstrip("/")
        self._token = settings.label_studio.api_key
        self.local_files_root = settings.label_studio.local_files_root
        self.upload_dir = settings.label_studio.upload_dir
        self.max_bytes = int(settings.images.max_mb * 1024 * 1024)
        self.max_pixels = settings.images.max_pixels
        self.timeout = settings.images.fetch_timeout
        self.policy = HostPolicy.parse(settings.images.allowed_hosts, self.label_studio_url)
        self._session = guarded_session(self.policy)

    # --- public ---------------------------------------------------------------------------------
    def load(self, url: str) -> LoadedImage:
        data, source = self.read_bytes(url)
        rgb = self.decode(data, source)
        return LoadedImage(rgb=rgb, sha256=hashlib.sha256(data).hexdigest(), source=source)

    def read_bytes(self, url: str) -> tuple[bytes, str]:
        """(raw file bytes, source description) for a task image URL."""
        if not isinstance(url, str) or not url.strip():
            raise BadRequest("the task's image URL is empty")
        url = url.strip()
        try:
            parts = urlsplit(url)
        except ValueError as exc:
            raise ImageError(f"malformed image URL {redact_url(url)!r}: {exc}") from None
        scheme = parts.scheme.lower()
        try:
            if scheme in ("http", "https"):
                return self._fetch(url)
            if scheme in CLOUD_SCHEMES:
                raise ImageError(
                    f"cannot read {scheme}:// URL {redact_url(url)!r}: cloud storage URLs must be "
                    f"resolved by Label Studio. The backend holds no cloud credentials; in the project's "
                    f"Cloud Storage settings enable 'Use pre-signed URLs' so tasks reach the backend as "
                    f"http(s) links"
                )
            if scheme or parts.netloc or not url.startswith("/"):  # "//host/x" is not a Label Studio path
                raise ImageError(
                    f"unsupported image URL {redact_url(url)!r}: expected http(s)://, /data/upload/..., "
                    f"or /data/local-files/?d=..."
                )
            if parts.path.startswith(LOCAL_FILES_PREFIX) or parts.path == LOCAL_FILES_PREFIX.rstrip("/"):
                return self._local_file(parts.query, url)
            if parts.path.startswith(UPLOAD_PREFIX) and self.upload_dir:
                relative = unquote(parts.path[len(UPLOAD_PREFIX) :])
                local = self._under_root(Path(self.upload_dir), relative, url)
                if local.is_file():
                    return self._read_file(local), str(local)
            return self._fetch_from_label_studio(url)
        except ImageError as exc:
            # Last line of defence: whatever built the message, the token never leaves.
            if self._token and self._token in exc.message:
                raise ImageError(exc.message.replace(self._token, "***"), status=exc.status) from None
            raise

    def decode(self, data: bytes, source: str) -> np.ndarray:
        """Raw bytes -> (H, W, 3) uint8 RGB; grayscale, alpha and 16-bit inputs are normalised.

        EXIF orientation is applied (``cv2.imdecode`` with ``IMREAD_COLOR`` does, for JPEG and PNG,
        as browsers do): the pixels are those the editor shows, whose size it sends as
        ``original_width`` / ``original_height`` (tests/unit/labelstudio/test_images.py checks it).
        """
        if not data:
            raise ImageError(f"image {source} is empty (0 bytes)")
        size = self._header_size(data, source)
        if size is not None:
            self._check_pixels(size[0], size[1], source)
        bgr = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_COLOR)
        if bgr is None:
            raise ImageError(f"{source} is not a decodable image ({len(data)} bytes)", status=422)
        if bgr.size == 0 or bgr.ndim != 3:
            raise ImageError(f"image {source} has no pixels (shape {bgr.shape})")
        self._check_pixels(bgr.shape[1], bgr.shape[0], source)
        return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)

    # --- decoding guards ------------------------------------------------------------------------
    def _check_pixels(self, width: int, height: int, source: str) -> None:
        if width <= 0 or height <= 0:
            raise ImageError(f"image {source} has no pixels ({width}x{height})")
        if width * height > self.max_pixels:
            raise ImageError(
                f"image {source} is {width}x{height} = {width * height} pixels, more than "
                f"RPSAM2_MAX_IMAGE_PIXELS={self.max_pixels}",
                status=413,
            )

    @staticmethod
    def _header_size(data: bytes, source: str) -> tuple[int, int] | None:
        """(width, height) from the header alone, or None when PIL does not know the format."""
        try:
            with warnings.catch_warnings():  # PIL warns about every damaged tag; the size is all we read
                warnings.simplefilter("ignore")
                with Image.open(io.BytesIO(data)) as image:
                    return image.size
        except Image.DecompressionBombError as exc:
            raise ImageError(f"image {source} is too large to decode safely: {exc}", status=413) from None
        except Exception:  # unknown or broken header: cv2 gets the final word
            return None

    # --- local files ----------------------------------------------------------------------------
    def _local_file(self, query: str, url: str) -> tuple[bytes, str]:
        if not self.local_files_root:
            raise ImageError(
                f"image {redact_url(url)!r} is in Label Studio local-files storage, but "
                f"LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT is not set for the backend: set it to the same "
                f"directory Label Studio serves local files from (mounted at the same place)"
            )
        values = parse_qs(query).get("d")
        if not values or not values[0]:
            raise ImageError(f"local-files URL {redact_url(url)!r} has no ?d=<path>", status=400)
        path = self._under_root(Path(self.local_files_root), values[0], url)
        if not path.is_file():
            raise ImageError(f"local file {values[0]!r} not found under the local-files root", status=404)
        return self._read_file(path), str(path)

    @staticmethod
    def _under_root(root: Path, relative: str, url: str) -> Path:
        """``root / relative``, refusing absolute paths, ``..`` and symlinks that leave the root."""
        candidate = Path(relative)
        if not relative or candidate.is_absolute() or relative.startswith(("/", "\\")) or "\0" in relative:
            raise ImageError(
                f"refusing image path {relative!r} from {redact_url(url)!r}: not a relative path", status=403
            )
        if ".." in candidate.parts or ".." in relative.replace("\\", "/").split("/"):
            raise ImageError(
                f"refusing image path {relative!r}: '..' leaves the allowed directory", status=403
            )
        real_root = Path(os.path.realpath(root))
        real = Path(os.path.realpath(real_root / candidate))
        if real != real_root and real_root not in real.parents:
            raise ImageError(
                f"refusing image path {relative!r}: it resolves (through a link) outside the allowed "
                f"directory",
                status=403,
            )
        return real

    def _read_file(self, path: Path) -> bytes:
        try:
            size = path.stat().st_size
            if size > self.max_bytes:
                raise self._too_big(str(path), size)
            with path.open("rb") as handle:
                data = handle.read(self.max_bytes + 1)
        except OSError as exc:
            raise ImageError(f"cannot read {path}: {exc.strerror or exc}", status=404) from None
        if len(data) > self.max_bytes:  # grew between stat and read
            raise self._too_big(str(path), len(data))
        return data

    def _too_big(self, source: str, size: int | None) -> ImageError:
        got = f"{size} bytes" if size is not None else f"more than {self.max_bytes} bytes"
        return ImageError(
            f"image {source} is too large ({got}; RPSAM2_MAX_IMAGE_MB={self.max_bytes / 1024 / 1024:g})",
            status=413,
        )

    # --- HTTP -----------------------------------------------------------------------------------
    def _fetch_from_label_studio(self, path: str) -> tuple[bytes, str]:
        if not self.label_studio_url:
            upload_hint = ""
            if path.startswith(UPLOAD_PREFIX):
                upload_hint = ", or set RPSAM2_UPLOAD_DIR to Label Studio's upload folder"
            raise ImageError(
                f"image {redact_url(path)!r} is a Label Studio path, but LABEL_STUDIO_URL is not set: set it "
                f"(and LABEL_STUDIO_API_KEY) so the backend can download task images{upload_hint}"
            )
        return self._fetch(self.label_studio_url + path)

    def _on_label_studio(self, url: str) -> bool:
        if not self.label_studio_url:
            return False
        try:
            return _origin(url) == _origin(self.label_studio_url)
        except ValueError:
            return False

    def _fetch(self, url: str) -> tuple[bytes, str]:
        shown = redact_url(url)
        on_ls = self._on_label_studio(url)
        headers = {"Authorization": f"Token {self._token}"} if on_ls and self._token else {}
        deadline = time.monotonic() + self.timeout
        try:
            # requests drops the Authorization header itself if a redirect leaves the host.
            with self._session.get(url, headers=headers, stream=True, timeout=self.timeout) as response:
                if response.status_code >= 400:
                    raise self._http_error(response.status_code, shown, on_ls)
                declared = response.headers.get("Content-Length")
                if declared and declared.isdigit() and int(declared) > self.max_bytes:
                    raise self._too_big(shown, int(declared))
                chunks, total = [], 0
                for chunk in response.iter_content(_CHUNK):
                    total += len(chunk)
                    if total > self.max_bytes:
                        raise self._too_big(shown, None)
                    if time.monotonic() > deadline:
                        raise ImageError(
                            f"downloading {shown} took longer than RPSAM2_FETCH_TIMEOUT={self.timeout:g} s",
                            status=504,
                        )
                    chunks.append(chunk)
        except (requests.Timeout, requests.ConnectionError) as exc:
            # A read timeout while streaming the body surfaces as ConnectionError(ReadTimeoutError).
            if isinstance(exc, requests.Timeout) or any(isinstance(a, ReadTimeoutError) for a in exc.args):
                raise ImageError(
                    f"timed out after {self.timeout:g} s fetching {shown} (RPSAM2_FETCH_TIMEOUT)", status=504
                ) from None
            raise ImageError(
                f"cannot reach {shown} ({type(exc).__name__}): is the host up and reachable?", status=502
            ) from None
        except BlockedDestination as exc:
            raise ImageError(f"refused to fetch {shown}: {exc}", status=403) from None
        except requests.TooManyRedirects:
            raise ImageError(f"fetching {shown} was redirected more than {self._session.max_redirects} times",
                             status=502) from None
        except requests.RequestException as exc:
            raise ImageError(f"fetching {shown} failed: {type(exc).__name__}", status=502) from None
        log.debug("fetched %s (%d bytes)", shown, total)
        return b"".join(chunks), shown

    @staticmethod
    def _http_error(status: int, shown: str, on_ls: bool) -> ImageError:
        if status in (404, 410):
            return ImageError(f"image not found: HTTP {status} from {shown}", status=404)
        hint = ""
        if status in (401, 403):
            hint = (
                ": Label Studio refused the backend's credentials, check LABEL_STUDIO_API_KEY"
                if on_ls
                else ": the image server wants credentials the backend does not send to other hosts"
            )
        return ImageError(f"HTTP {status} fetching {shown}{hint}", status=502)
