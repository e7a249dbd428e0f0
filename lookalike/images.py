"""Load, validate and normalise product images from a path, bytes, a PIL image or an http(s) URL.

Every image leaves here as a fully decoded RGB ``PIL.Image`` with EXIF orientation applied.
Every failure is an :class:`~lookalike.errors.ImageError` (or subclass) whose message names the
item and the reason and whose ``kind`` says what went wrong, so batch indexing can skip and
count bad items instead of crashing.

URL fetching is SSRF-guarded: only http/https, no userinfo, and every address the host resolves
to must be public (not loopback, private, link-local, multicast, reserved, unspecified, nor an
IPv4 address of those kinds embedded in IPv6). The check runs for the first URL and for every
redirect hop (redirects are followed by hand). To defeat DNS rebinding the request is sent to
the very IP that was checked: the URL's host is replaced by that IP, the ``Host`` header keeps the
original name, and for https the ``sni_hostname`` request extension makes httpcore send SNI for
the name and verify the certificate against it. ``settings.allow_private_urls`` lifts the address
check; ``settings.allowed_private_networks`` (CIDR list, optional) lifts it for listed networks.
"""

from __future__ import annotations

import hashlib
import io
import ipaddress
import logging
import math
import os
import re
import socket
import stat
import threading
import time
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import httpx
import imagehash
import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from lookalike.config import Settings, get_settings
from lookalike.errors import (
    FetchError,
    ImageError,
    TooLargeError,
    UnsupportedFormatError,
    URLNotAllowedError,
)

log = logging.getLogger(__name__)

#: formats we decode (camera JPEGs that Pillow opens as "MPO" come through JPEG, reported as JPEG)
ALLOWED_FORMATS = ("JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF")
_REDIRECT_CODES = {301, 302, 303, 307, 308}
_URL_SCHEME_RE = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]*://")
_HTML_TYPES = ("text/html", "application/xhtml+xml")
_NAT64 = ipaddress.ip_network("64:ff9b::/96")


@dataclass
class LoadedImage:
    image: Image.Image  # RGB, EXIF orientation applied, fully decoded
    sha256: str  # of the original bytes; for a PIL input of b"RGB WxH\n" + RGB pixel bytes
    uri: str  # path as given, URL, "<bytes>", "<image>" or the name= argument
    width: int
    height: int
    format: str  # "JPEG", "PNG", ... ("RAW" for a PIL input)
    data: bytes | None  # original bytes (None for a PIL input)


# --------------------------------------------------------------------------- loading


def load_image(
    source: str | os.PathLike | bytes | Image.Image,
    *,
    settings: Settings | None = None,
    name: str | None = None,
) -> LoadedImage:
    """Load ``source`` (path, http(s) URL, bytes or PIL image) as a validated RGB image."""
    s = settings or get_settings()
    if isinstance(source, Image.Image):
        uri = name or "<image>"
        image = _normalise(source, item=uri, settings=s)
        digest = hashlib.sha256(f"RGB {image.width}x{image.height}\n".encode() + image.tobytes())
        return LoadedImage(image, digest.hexdigest(), uri, image.width, image.height, "RAW", None)
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
        uri = name or "<bytes>"
        image, fmt = decode_image(data, item=uri, settings=s)
    elif isinstance(source, str) and _URL_SCHEME_RE.match(source):
        uri = name or source
        if not source.lower().startswith(("http://", "https://")):
            raise URLNotAllowedError(uri, "only http and https URLs are allowed", kind="ssrf")
        data = fetch_url(source, settings=s)
        try:
            image, fmt = decode_image(data, item=uri, settings=s)
        except ImageError as e:
            if e.kind != "not_image":
                raise
            raise FetchError(uri, "URL did not return an image", kind="not_image_content") from e
    elif isinstance(source, (str, os.PathLike)):
        uri = name or os.fspath(source)
        data = _read_file(os.fspath(source), item=uri, settings=s)
        image, fmt = decode_image(data, item=uri, settings=s)
    else:
        raise ImageError(str(name or type(source).__name__), "unsupported source type", kind="invalid")
    digest = hashlib.sha256(data).hexdigest()
    width, height = image.info.get(ORIGINAL_SIZE, image.size)
    return LoadedImage(image, digest, uri, width, height, fmt, data)


def _read_file(path: str, *, item: str, settings: Settings) -> bytes:
    """Read a regular file, refusing it from its size before reading when it is too big."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise ImageError(item, "file not found", kind="missing") from None
    except OSError as e:
        raise ImageError(item, f"cannot access file ({e.strerror or e})", kind="unreadable") from None
    if stat.S_ISDIR(st.st_mode):
        raise ImageError(item, "is a directory, not an image file", kind="not_a_file")
    if not stat.S_ISREG(st.st_mode):
        raise ImageError(item, "not a regular file", kind="not_a_file")
    limit = settings.max_image_bytes
    if st.st_size > limit:
        raise TooLargeError(item, f"file is {st.st_size} bytes, limit is {limit}", kind="too_large")
    try:
        with open(path, "rb") as f:
            data = f.read(limit + 1)  # the file may have grown since stat
    except OSError as e:
        raise ImageError(item, f"cannot read file ({e.strerror or e})", kind="unreadable") from None
    if len(data) > limit:
        raise TooLargeError(item, f"file is over the {limit}-byte limit", kind="too_large")
    return data


def decode_image(data: bytes, *, item: str, settings: Settings | None = None) -> tuple[Image.Image, str]:
    """Decode image bytes to a fully loaded RGB image; returns (image, format name)."""
    s = settings or get_settings()
    if not data:
        raise ImageError(item, "empty file (0 bytes)", kind="empty")
    if len(data) > s.max_image_bytes:
        raise TooLargeError(item, f"{len(data)} bytes, limit is {s.max_image_bytes}", kind="too_large")
    img = _open(data, item=item)
    fmt = "JPEG" if img.format == "MPO" else str(img.format)
    return _normalise(img, item=item, settings=s, shrink=True), fmt


def _open(data: bytes, *, item: str) -> Image.Image:
    """Identify the format from the header only (nothing is decoded yet)."""
    bomb = (Image.DecompressionBombError, Image.DecompressionBombWarning)
    try:
        return Image.open(io.BytesIO(data), formats=ALLOWED_FORMATS)
    except bomb as e:
        raise TooLargeError(item, f"decompression bomb refused ({e})", kind="too_many_pixels") from None
    except UnidentifiedImageError:
        pass
    except Exception as e:  # a broken header in an allowed format
        if _riff_truncated(data):
            raise ImageError(item, f"truncated WebP file ({_describe(e)})", kind="truncated") from None
        raise ImageError(item, f"corrupt image header ({_describe(e)})", kind="invalid") from None
    # Not one of ours: tell "valid image in a format we do not take" from "not an image".
    try:
        with Image.open(io.BytesIO(data)) as other:
            fmt = other.format
    except Exception:
        raise ImageError(item, "not an image (unrecognised content)", kind="not_image") from None
    raise UnsupportedFormatError(
        item,
        f"unsupported image format {fmt} (allowed: JPEG, PNG, WEBP, GIF, BMP, TIFF)",
        kind="unsupported_format",
    )


def _riff_truncated(data: bytes) -> bool:
    """WebP (RIFF) declares its length up front; Pillow's WebP reader does not say "truncated"."""
    return data[:4] == b"RIFF" and len(data) >= 8 and int.from_bytes(data[4:8], "little") + 8 > len(data)


class _PixelBudget:
    """Bounds the pixels being decoded at once across threads (decoding takes several bytes per
    pixel: a small PNG of a huge image must not be decoded many times in parallel). Decodes start
    in the order they asked, so a large image is not kept waiting by a stream of small ones."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._used = 0
        self._waiting: deque[object] = deque()

    @contextmanager
    def take(self, pixels: int, capacity: int) -> Iterator[None]:
        pixels = min(pixels, capacity)
        ticket = object()
        with self._cond:
            self._waiting.append(ticket)
            # first in line, and it fits (one image always may go)
            while self._waiting[0] is not ticket or (self._used and self._used + pixels > capacity):
                self._cond.wait()
            self._waiting.popleft()
            self._used += pixels
            self._cond.notify_all()  # the next in line may fit beside this one
        try:
            yield
        finally:
            with self._cond:
                self._used -= pixels
                self._cond.notify_all()


_DECODING = _PixelBudget()
#: key of ``Image.info`` holding an image's size before :func:`_normalise` shrank it
ORIGINAL_SIZE = "lookalike.original_size"


def _normalise(img: Image.Image, *, item: str, settings: Settings, shrink: bool = False) -> Image.Image:
    """Check the pixel limit, decode fully, apply EXIF orientation and convert to RGB.

    ``shrink``: an image whose long side is over ``settings.max_image_side`` comes out that long
    (JPEGs decode at a reduced scale, others are resized); ``Image.info[ORIGINAL_SIZE]`` keeps the
    size it had. At most ``settings.max_image_pixels`` pixels are decoded at once in the process."""
    width, height = img.size
    if width <= 0 or height <= 0:
        raise ImageError(item, f"invalid image size {width}x{height}", kind="invalid")
    limit = settings.max_image_pixels
    if width * height > limit:
        raise TooLargeError(
            item,
            f"{width}x{height} = {width * height} pixels, limit is {limit} (decompression bomb?)",
            kind="too_many_pixels",
        )
    side = settings.max_image_side
    with _DECODING.take(width * height, limit):
        if shrink and img.format in ("JPEG", "MPO") and max(width, height) > 2 * side:
            scale = side / max(width, height)  # the decoder picks 1/2, 1/4 or 1/8 of at least this
            img.draft(img.mode, (math.ceil(width * scale), math.ceil(height * scale)))
        try:
            img.load()
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
            raise TooLargeError(item, f"decompression bomb refused ({e})", kind="too_many_pixels") from None
        except Exception as e:
            text = str(e).lower()
            if isinstance(e, EOFError) or "truncat" in text or "premature" in text:
                raise ImageError(item, f"truncated image file ({_describe(e)})", kind="truncated") from None
            raise ImageError(item, f"corrupt image data ({_describe(e)})", kind="invalid") from None
        decoded = img.size
        try:
            img = ImageOps.exif_transpose(img)
        except Exception as e:  # a broken EXIF block must not lose an otherwise good image
            log.warning("%s: ignoring unreadable EXIF orientation (%s)", item, _describe(e))
        if img.size != decoded:  # turned a quarter: the original's sides swap too
            width, height = height, width
        try:
            if shrink and max(img.size) > side:  # shrink first: the conversions then work on less
                img = _shrink(img, side)
            rgb = to_rgb(img)
            rgb.load()
        except Exception as e:
            raise ImageError(
                item, f"cannot convert image mode {img.mode} to RGB ({_describe(e)})", kind="invalid"
            ) from None
    if rgb.size != (width, height):
        rgb.info[ORIGINAL_SIZE] = (width, height)  # as seen, after EXIF orientation
    return rgb


def _shrink(img: Image.Image, side: int) -> Image.Image:
    """``img`` with its long side ``side``, in a mode that keeps what to_rgb needs (alpha, grey)."""
    if img.mode.startswith("I") or img.mode == "F":
        img = Image.fromarray(_to_uint8(img), "L")
    elif img.mode not in ("L", "LA", "RGB", "RGBA"):
        img = img.convert("RGBA" if img.mode in ("P", "PA") and _has_alpha(img) else "RGB")
    img.thumbnail((side, side), Image.Resampling.LANCZOS)  # alpha is premultiplied while resizing
    return img


def _has_alpha(img: Image.Image) -> bool:
    return img.mode == "PA" or "transparency" in img.info


def to_rgb(img: Image.Image) -> Image.Image:
    """Convert any Pillow mode to RGB: alpha is composited on white, 16/32-bit is rescaled."""
    mode = img.mode
    if mode == "RGB":
        return img
    if (mode == "P" and "transparency" in img.info) or mode == "PA":
        img, mode = img.convert("RGBA"), "RGBA"
    if mode in ("RGBA", "LA", "La", "RGBa"):
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    if mode.startswith("I") or mode == "F":
        return Image.fromarray(_to_uint8(img), "L").convert("RGB")
    return img.convert("RGB")


def _to_uint8(img: Image.Image) -> np.ndarray:
    """Scale high-bit-depth grey to 0..255 (Pillow's own convert("L") would clip), a band of rows
    at a time so that a large image needs little memory beyond its 8-bit result."""
    arr = np.asarray(img)
    out = np.empty(arr.shape, dtype=np.uint8)
    if img.mode.startswith("I;16"):
        offset, factor = 0.0, 1 / 257.0
    elif img.mode == "F" and arr.size and arr.min() >= 0.0 and arr.max() <= 1.0:
        offset, factor = 0.0, 255.0
    elif img.mode == "I" and arr.size and arr.min() >= 0 and arr.max() <= 65535:
        offset, factor = 0.0, 1 / 257.0  # 32-bit container holding 16-bit data (e.g. older 16-bit PNG reads)
    else:
        lo, hi = (float(arr.min()), float(arr.max())) if arr.size else (0.0, 0.0)
        offset, factor = lo, (255.0 / (hi - lo) if hi > lo else 0.0)
    rows = max(1, (1 << 20) // max(1, arr.shape[1] if arr.ndim > 1 else 1))  # about 1M pixels a band
    for start in range(0, arr.shape[0], rows):
        band = (arr[start : start + rows].astype(np.float64) - offset) * factor
        out[start : start + rows] = np.clip(np.rint(band), 0, 255)
    return out


def _describe(e: BaseException) -> str:
    return f"{type(e).__name__}: {e}" if str(e) else type(e).__name__


# --------------------------------------------------------------------------- URLs and SSRF


def check_url_allowed(url: str, *, settings: Settings | None = None) -> list[str]:
    """Resolve ``url``'s host and refuse it unless every address is allowed; returns the IPs."""
    _, ips = _check_url(url, item=url, settings=settings or get_settings())
    return ips


def _check_url(url: str, *, item: str, settings: Settings) -> tuple[httpx.URL, list[str]]:
    try:
        parsed = httpx.URL(url)
    except Exception as e:
        raise URLNotAllowedError(item, f"malformed URL {url!r} ({e})", kind="ssrf") from None
    if parsed.scheme not in ("http", "https"):
        raise URLNotAllowedError(
            item, f"scheme {parsed.scheme or '(none)'!r} not allowed (only http, https)", kind="ssrf"
        )
    if parsed.userinfo:
        raise URLNotAllowedError(item, "URLs with user info (user@host) are not allowed", kind="ssrf")
    host = parsed.raw_host.decode("ascii")
    if not host:
        raise URLNotAllowedError(item, f"URL {url!r} has no host", kind="ssrf")
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError, OSError) as e:
        raise FetchError(item, f"cannot resolve host {host!r} ({e})", kind="fetch_failed") from None
    ips = list(dict.fromkeys(info[4][0].split("%")[0] for info in infos))
    if not ips:
        raise FetchError(item, f"host {host!r} has no addresses", kind="fetch_failed")
    if not settings.allow_private_urls:
        allowed = [
            ipaddress.ip_network(n, strict=False)
            for n in (getattr(settings, "allowed_private_networks", None) or [])
        ]
        for ip_text in ips:
            ip = ipaddress.ip_address(ip_text)
            if any(ip.version == net.version and ip in net for net in allowed):
                continue
            why = _ip_refusal(ip)
            if why:
                raise URLNotAllowedError(
                    item,
                    f"host {host!r} resolves to {ip} ({why}); the setting LOOKALIKE_ALLOW_PRIVATE_URLS "
                    "(or LOOKALIKE_ALLOWED_PRIVATE_NETWORKS) permits it",
                    kind="ssrf",
                )
    return parsed, ips


def _ip_refusal(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str | None:
    """Why this address may not be fetched, or None when it is a public unicast address."""
    if isinstance(ip, ipaddress.IPv6Address):
        embedded = ip.ipv4_mapped or ip.sixtofour or (ip.teredo[1] if ip.teredo else None)
        if embedded is None and ip in _NAT64:
            embedded = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
        if embedded is not None:
            why = _ip_refusal(embedded)
            if why:
                return f"embeds {embedded}: {why}"
    for attr, why in (
        ("is_unspecified", "unspecified address"),
        ("is_loopback", "loopback address"),
        ("is_link_local", "link-local address"),
        ("is_multicast", "multicast address"),
        ("is_private", "private address"),
        ("is_reserved", "reserved address"),
    ):
        if getattr(ip, attr):
            return why
    if not ip.is_global:
        return "not a globally routable address"
    return None


def fetch_url(url: str, *, settings: Settings | None = None) -> bytes:
    """Download ``url`` with the SSRF guard, a byte limit and a timeout; returns the body."""
    s = settings or get_settings()
    deadline = time.monotonic() + s.fetch_timeout
    current = url
    with httpx.Client(
        timeout=httpx.Timeout(s.fetch_timeout), follow_redirects=False, trust_env=False
    ) as client:
        for hop in range(s.max_redirects + 1):
            try:
                parsed, ips = _check_url(current, item=url, settings=s)
            except ImageError as e:
                if hop == 0:
                    raise
                raise type(e)(url, f"redirect to {current} refused: {e.reason}", kind=e.kind) from None
            remaining = deadline - time.monotonic()  # one deadline for every hop, not one per hop
            if remaining <= 0:
                raise FetchError(url, f"timed out after {s.fetch_timeout:g} s", kind="timeout")
            response = _send_pinned(client, parsed, ips, item=url, timeout=remaining)
            try:
                location = response.headers.get("location")
                if response.status_code in _REDIRECT_CODES and location:
                    current = str(parsed.join(location))
                    continue
                return _read_body(response, item=url, settings=s, deadline=deadline)
            except httpx.TimeoutException:
                raise FetchError(url, f"timed out after {s.fetch_timeout:g} s", kind="timeout") from None
            except httpx.HTTPError as e:
                raise FetchError(url, f"download failed ({_describe(e)})", kind="fetch_failed") from None
            finally:
                response.close()
    raise FetchError(url, f"more than {s.max_redirects} redirects", kind="fetch_failed")


def _send_pinned(
    client: httpx.Client, parsed: httpx.URL, ips: list[str], *, item: str, timeout: float
) -> httpx.Response:
    """Send the request to one of the already-checked IPs, keeping Host header and TLS name;
    ``timeout`` bounds connecting and each read."""
    host = parsed.raw_host.decode("ascii")
    headers = {"Host": parsed.netloc.decode("ascii"), "Accept": "image/*", "Accept-Encoding": "identity"}
    extensions = {"sni_hostname": host} if parsed.scheme == "https" else {}
    error: Exception | None = None
    for ip in ips:
        request = client.build_request(
            "GET", parsed.copy_with(host=ip), headers=headers, extensions=extensions, timeout=timeout
        )
        try:
            return client.send(request, stream=True)
        except httpx.TimeoutException:
            raise FetchError(item, f"timed out after {client.timeout.read:g} s", kind="timeout") from None
        except httpx.ConnectError as e:
            error = e  # try the next address
        except httpx.HTTPError as e:
            raise FetchError(item, f"request failed ({_describe(e)})", kind="fetch_failed") from None
    raise FetchError(item, f"cannot connect ({_describe(error)})", kind="fetch_failed")


def _read_body(response: httpx.Response, *, item: str, settings: Settings, deadline: float) -> bytes:
    if not 200 <= response.status_code < 300:
        raise FetchError(item, f"HTTP status {response.status_code}", kind="http_status")
    content_type = response.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type in _HTML_TYPES:
        raise FetchError(item, f"URL returned {content_type}, not an image", kind="not_image_content")
    limit = settings.max_image_bytes
    declared = response.headers.get("content-length")
    if declared and declared.strip().isdigit() and int(declared) > limit:
        raise TooLargeError(
            item, f"Content-Length {declared} is over the {limit}-byte limit", kind="too_large"
        )
    chunks: list[bytes] = []
    total = 0
    for chunk in response.iter_bytes():
        total += len(chunk)
        if total > limit:
            raise TooLargeError(item, f"body is over the {limit}-byte limit", kind="too_large")
        if time.monotonic() > deadline:
            raise FetchError(item, f"timed out after {settings.fetch_timeout:g} s", kind="timeout")
        chunks.append(chunk)
    data = b"".join(chunks)
    head = data[:512].lstrip().lower()
    if head.startswith((b"<!doctype html", b"<html")):
        raise FetchError(item, "URL returned an HTML page, not an image", kind="not_image_content")
    return data


# --------------------------------------------------------------------------- hashes, thumbnails


def perceptual_hash(image: Image.Image) -> str:
    """64-bit DCT perceptual hash (imagehash.phash) as 16 hex characters."""
    return str(imagehash.phash(image))


def hamming(h1: str, h2: str) -> int:
    """Number of differing bits between two hex hashes of the same length."""
    if len(h1) != len(h2):
        raise ValueError(f"hashes differ in length: {h1!r} vs {h2!r}")
    return (int(h1, 16) ^ int(h2, 16)).bit_count()


def thumbnail_bytes(image: Image.Image, size: int = 256) -> bytes:
    """A small thumbnail, aspect kept: WEBP, or lossless PNG for tiny images (<= 64x64)."""
    thumb = to_rgb(image).copy()
    thumb.thumbnail((size, size), Image.Resampling.LANCZOS)
    out = io.BytesIO()
    if thumb.width * thumb.height <= 64 * 64:
        thumb.save(out, format="PNG", optimize=True)
    else:
        thumb.save(out, format="WEBP", quality=80, method=4)
    return out.getvalue()
