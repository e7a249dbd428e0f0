"""Tests for lookalike.images: formats and modes, broken files, URL fetching and the SSRF guard."""

from __future__ import annotations

import hashlib
import io
import os
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest
from image_corpus import (
    BLUE,
    RED,
    CorpusItem,
    bad_files,
    build_corpus,
    encode,
    good_files,
    gradient_rgb,
)
from PIL import Image, ImageFile

from lookalike.config import Settings
from lookalike.errors import (
    FetchError,
    ImageError,
    TooLargeError,
    UnsupportedFormatError,
    URLNotAllowedError,
)
from lookalike.images import (
    _PixelBudget,
    _to_uint8,
    check_url_allowed,
    decode_image,
    fetch_url,
    hamming,
    load_image,
    perceptual_hash,
    thumbnail_bytes,
)

GOOD = sorted(good_files())
BAD = sorted(bad_files())
KIND_CLASS = {"too_large": TooLargeError, "too_many_pixels": TooLargeError}
KIND_CLASS["unsupported_format"] = UnsupportedFormatError


class NetSettings(Settings):
    """Settings plus the field the SSRF allow-list reads (proposed for lookalike.config)."""

    allowed_private_networks: list[str] = []


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> dict[str, CorpusItem]:
    return build_corpus(tmp_path_factory.mktemp("corpus"))


def close(pixel, expected, tol=12) -> bool:
    return all(abs(a - b) <= tol for a, b in zip(pixel, expected, strict=True))


# --------------------------------------------------------------------------- good files


@pytest.mark.parametrize("name", GOOD)
def test_good_file_loads_as_rgb(corpus, name):
    item = corpus[name]
    loaded = load_image(item.path)
    data = item.path.read_bytes()
    assert loaded.image.mode == "RGB"
    assert loaded.format == item.format
    assert (loaded.width, loaded.height) == item.size == loaded.image.size
    assert loaded.sha256 == hashlib.sha256(data).hexdigest()
    assert loaded.data == data
    assert loaded.uri == str(item.path)
    # bytes give the same result as the path
    again = load_image(data, name="upload")
    assert again.uri == "upload" and again.sha256 == loaded.sha256
    assert np.array_equal(np.asarray(again.image), np.asarray(loaded.image))


def test_exif_orientation_6_rotates_clockwise(corpus):
    img = load_image(corpus["exif_rotated.jpg"].path).image
    assert img.size == (20, 40)  # stored 40x20
    # stored left half red, right half blue => displayed top red, bottom blue
    assert close(img.getpixel((10, 5)), RED, 30)
    assert close(img.getpixel((10, 34)), BLUE, 30)


def test_alpha_is_composited_on_white(corpus):
    for name in ("rgba.png", "rgba.webp"):
        img = load_image(corpus[name].path).image
        assert close(img.getpixel((4, 8)), BLUE, 2), name
        assert img.getpixel((28, 8)) == (255, 255, 255), name
    la = load_image(corpus["la.png"].path).image
    assert la.getpixel((28, 8)) == (255, 255, 255)
    assert la.getpixel((4, 8))[0] < 60  # opaque dark grey (blue's luma)


def test_16bit_grey_is_rescaled_not_clipped(corpus):
    for name in ("gray16.png", "gray16.tif"):
        row = np.asarray(load_image(corpus[name].path).image)[8, :, 0].astype(int)
        assert row[0] == 0 and row[-1] == 255, name
        assert abs(row[32] - 128) <= 3, name  # mid-grey stays mid-grey
        assert np.all(np.diff(row) >= 0) and len(set(row.tolist())) > 50, name


def test_16bit_rescaling_in_bands_matches_the_whole_image_formula():
    """_to_uint8 converts a band of rows at a time; the result is the same as in one piece."""
    rng = np.random.default_rng(0)
    wide = rng.integers(0, 65536, (700, 2000), dtype=np.uint16)  # several bands of rows
    img16 = Image.fromarray(wide)
    assert img16.mode == "I;16"
    out = _to_uint8(img16)
    assert out.dtype == np.uint8 and out.shape == wide.shape
    assert np.array_equal(out, np.clip(np.rint(wide / 257.0), 0, 255).astype(np.uint8))
    grey = rng.normal(100.0, 30.0, (600, 1800)).astype(np.float32)
    lo, hi = float(grey.min()), float(grey.max())
    expected = np.clip(np.rint((grey.astype(np.float64) - lo) * (255.0 / (hi - lo))), 0, 255)
    assert np.array_equal(_to_uint8(Image.fromarray(grey)), expected.astype(np.uint8))


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_huge_images_are_shrunk_after_decoding_and_keep_their_size(fmt):
    settings = Settings(max_image_side=100)
    data = encode(Image.fromarray(np.full((250, 450, 3), 200, np.uint8)), fmt)
    loaded = load_image(data, settings=settings)
    assert loaded.image.size == (100, 56) and (loaded.width, loaded.height) == (450, 250)
    small = load_image(encode(Image.fromarray(np.full((50, 90, 3), 9, np.uint8)), fmt), settings=settings)
    assert small.image.size == (90, 50) and (small.width, small.height) == (90, 50)


def test_shrinking_keeps_alpha_on_white_and_rescales_16_bit():
    settings = Settings(max_image_side=100)
    rgba = np.zeros((200, 600, 4), np.uint8)
    rgba[:, :300] = (0, 0, 255, 255)  # opaque blue left, fully transparent red right
    rgba[:, 300:] = (255, 0, 0, 0)
    shrunk = load_image(encode(Image.fromarray(rgba), "PNG"), settings=settings).image
    assert shrunk.size == (100, 33)
    assert close(shrunk.getpixel((10, 16)), BLUE, 2) and shrunk.getpixel((90, 16)) == (255, 255, 255)
    palette = Image.fromarray(rgba[:, :, :3]).convert("P")
    palette.info["transparency"] = palette.getpixel((400, 100))
    shrunk = load_image(encode(palette, "PNG"), settings=settings).image
    assert close(shrunk.getpixel((10, 16)), BLUE, 2) and shrunk.getpixel((90, 16)) == (255, 255, 255)
    ramp = np.tile(np.linspace(0, 65535, 600).astype(np.uint16), (200, 1))
    row = np.asarray(load_image(encode(Image.fromarray(ramp), "PNG"), settings=settings).image)[16, :, 0]
    assert row[0] <= 3 and row[-1] >= 252 and np.all(np.diff(row.astype(int)) >= 0)


def test_shrunk_exif_rotated_jpeg_keeps_its_displayed_size():
    exif = Image.Exif()
    exif[0x0112] = 6  # stored 200 x 100, shown turned a quarter: 100 x 200
    buf = io.BytesIO()
    Image.fromarray(np.full((100, 200, 3), 90, np.uint8)).save(buf, format="JPEG", exif=exif)
    loaded = load_image(buf.getvalue(), settings=Settings(max_image_side=64))
    assert loaded.image.size == (32, 64) and (loaded.width, loaded.height) == (100, 200)


def test_max_image_side_has_a_floor():
    with pytest.raises(ValueError, match="max_image_side"):
        Settings(max_image_side=0)


def test_pixel_budget_decodes_large_images_one_at_a_time_in_order():
    """A decode that does not fit beside the running one waits for it; decodes start in the order
    they asked, so a small one does not overtake a large one that waits (no starving it)."""
    budget, order = _PixelBudget(), []
    first_in = threading.Event()

    def decode(name: str, pixels: int) -> None:
        with budget.take(pixels, capacity=100):
            order.append(f"{name} in")
            if name == "a":
                first_in.set()
                time.sleep(0.5)
            order.append(f"{name} out")

    a = threading.Thread(target=decode, args=("a", 80))
    a.start()
    assert first_in.wait(5)
    b = threading.Thread(target=decode, args=("b", 500))  # more than the capacity: waits for a
    b.start()
    while not budget._waiting:  # b is in line
        time.sleep(0.01)
    c = threading.Thread(target=decode, args=("c", 10))  # would fit beside a, but b came first
    c.start()
    for t in (a, b, c):
        t.join(10)
    assert order == ["a in", "a out", "b in", "b out", "c in", "c out"]


def test_cmyk_palette_bilevel_and_gif_colours(corpus):
    reference = np.asarray(gradient_rgb()).astype(int)
    for name, tol in (("cmyk.jpg", 20), ("palette.png", 20), ("rgb.tif", 0), ("rgb.bmp", 0), ("rgb.webp", 0)):
        arr = np.asarray(load_image(corpus[name].path).image).astype(int)
        assert np.abs(arr - reference).mean() <= tol / 2 and np.abs(arr - reference).max() <= 4 * tol + 1, (
            name
        )
    bilevel = load_image(corpus["bilevel.png"].path).image
    assert bilevel.getpixel((2, 2)) == (255, 255, 255) and bilevel.getpixel((30, 2)) == (0, 0, 0)
    gif = load_image(corpus["animated.gif"].path).image
    assert gif.getpixel((12, 12)) == RED  # first frame, not the blue second one


# --------------------------------------------------------------------------- broken files


@pytest.mark.parametrize("name", BAD)
def test_bad_file_raises_image_error_with_kind(corpus, name):
    item = corpus[name]
    with pytest.raises(ImageError) as info:
        load_image(item.path)
    err = info.value
    assert err.kind == item.kind
    assert isinstance(err, KIND_CLASS.get(item.kind, ImageError))
    assert err.item == str(item.path) and str(item.path) in str(err)
    assert err.reason and err.reason in str(err)


@pytest.mark.parametrize("name", [n for n in BAD if n != "oversize.jpg"])
def test_bad_bytes_raise_the_same_kind(corpus, name):
    with pytest.raises(ImageError) as info:
        decode_image(corpus[name].path.read_bytes(), item=f"row 7 ({name})")
    assert info.value.kind == corpus[name].kind
    assert str(info.value).startswith(f"row 7 ({name}): ")


def test_truncation_is_detected_without_global_flag(corpus):
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False
    with pytest.raises(ImageError, match="truncated"):
        load_image(corpus["truncated.jpg"].path)
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False


def test_missing_file_directory_and_fifo(tmp_path):
    with pytest.raises(ImageError) as info:
        load_image(tmp_path / "nope.jpg")
    assert info.value.kind == "missing" and "nope.jpg" in str(info.value)
    with pytest.raises(ImageError) as info:
        load_image(str(tmp_path))
    assert info.value.kind == "not_a_file" and "directory" in str(info.value)
    fifo = tmp_path / "pipe.jpg"
    os.mkfifo(fifo)
    with pytest.raises(ImageError) as info:  # would block forever if it were opened
        load_image(fifo)
    assert info.value.kind == "not_a_file"


def test_limits_come_from_settings(corpus, monkeypatch):
    path = corpus["rgb.png"].path
    with pytest.raises(TooLargeError) as info:
        load_image(path, settings=Settings(max_image_bytes=100))
    assert info.value.kind == "too_large"
    with pytest.raises(TooLargeError) as info:
        load_image(path, settings=Settings(max_image_pixels=48 * 32 - 1))
    assert info.value.kind == "too_many_pixels"
    assert load_image(path, settings=Settings(max_image_pixels=48 * 32)).width == 48
    # the pixel check does not depend on Pillow's global limit
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", None)
    with pytest.raises(TooLargeError, match="64000000 pixels"):
        load_image(corpus["bomb.png"].path)


def test_other_url_schemes_are_refused_for_load_image():
    for url in ("file:///etc/passwd", "ftp://example.com/a.jpg", "gopher://x/"):
        with pytest.raises(URLNotAllowedError):
            load_image(url)


# --------------------------------------------------------------------------- PIL input, hashes


def test_pil_input_is_normalised_and_hashed():
    rgba = Image.new("RGBA", (10, 6), (0, 0, 0, 0))
    loaded = load_image(rgba)
    assert loaded.format == "RAW" and loaded.data is None and loaded.uri == "<image>"
    assert loaded.image.mode == "RGB" and loaded.image.getpixel((0, 0)) == (255, 255, 255)
    white = load_image(Image.new("RGB", (10, 6), (255, 255, 255)), name="w")
    assert white.sha256 == loaded.sha256 and white.uri == "w"
    other = load_image(Image.new("RGB", (6, 10), (255, 255, 255)))
    assert other.sha256 != loaded.sha256  # size is part of the hash
    with pytest.raises(TooLargeError):
        load_image(rgba, settings=Settings(max_image_pixels=59))


def test_perceptual_hash_and_hamming():
    blocks = np.random.default_rng(0).integers(0, 256, (12, 16, 3), dtype=np.uint8)
    base = Image.fromarray(blocks).resize((128, 96), Image.Resampling.BILINEAR)
    h = perceptual_hash(base)
    assert len(h) == 16 and int(h, 16) >= 0
    assert hamming(h, perceptual_hash(base.resize((64, 48)))) <= 4
    flipped = base.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    assert hamming(h, perceptual_hash(flipped)) > 10
    assert hamming("ffff", "0000") == 16 and hamming(h, h) == 0
    with pytest.raises(ValueError):
        hamming("ff", "fff")


def test_thumbnail_bytes():
    big = Image.open(io.BytesIO(thumbnail_bytes(gradient_rgb(600, 300))))
    assert big.format == "WEBP" and big.size == (256, 128)
    tiny = Image.open(io.BytesIO(thumbnail_bytes(Image.new("L", (28, 28), 7))))
    assert tiny.format == "PNG" and tiny.size == (28, 28)


# --------------------------------------------------------------------------- SSRF checks


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1/",
        "http://127.1.2.3:8080/x.jpg",
        "http://10.1.2.3/",
        "http://172.16.0.1/",
        "http://192.168.1.1/",
        "http://169.254.169.254/latest/meta-data/",
        "http://100.64.0.1/",
        "http://[::1]/",
        "http://[::ffff:127.0.0.1]/",
        "http://[::ffff:169.254.169.254]/",
        "http://[2002:7f00:1::]/",  # 6to4 wrapping 127.0.0.1
        "http://[fe80::1]/",
        "http://[fc00::1]/",
        "http://224.0.0.1/",
        "http://[ff02::1]/",
        "http://0.0.0.0/",
        "http://[::]/",
        "http://2130706433/",  # 127.0.0.1 as one decimal number
        "http://localhost:9/",
        "file:///etc/passwd",
        "ftp://8.8.8.8/a.jpg",
        "http://user@8.8.8.8/",
        "http://user:pw@8.8.8.8/",
        "http:///nohost",
    ],
)
def test_check_url_refuses(url):
    with pytest.raises(URLNotAllowedError) as info:
        check_url_allowed(url, settings=Settings())
    assert info.value.kind == "ssrf" and url in str(info.value)


def test_check_url_allows_public_and_returns_ips():
    assert check_url_allowed("http://8.8.8.8/a.jpg", settings=Settings()) == ["8.8.8.8"]
    assert check_url_allowed("https://[2001:4860:4860::8888]/", settings=Settings()) == [
        "2001:4860:4860::8888"
    ]
    opened = Settings(allow_private_urls=True)
    assert check_url_allowed("http://127.0.0.1:5/", settings=opened) == ["127.0.0.1"]
    assert "127.0.0.1" in check_url_allowed("http://localhost/", settings=opened)
    with pytest.raises(URLNotAllowedError):  # the scheme rule holds even when private is allowed
        check_url_allowed("file:///etc/passwd", settings=opened)
    net = NetSettings(allowed_private_networks=["10.9.0.0/16"])
    assert check_url_allowed("http://10.9.8.7/", settings=net) == ["10.9.8.7"]
    with pytest.raises(URLNotAllowedError):
        check_url_allowed("http://10.10.0.1/", settings=net)


# --------------------------------------------------------------------------- a real HTTP server

PNG_BYTES = encode(gradient_rgb(), "PNG")
HTML = b"<!DOCTYPE html><html><body><h1>Shop</h1></body></html>"


class Handler(BaseHTTPRequestHandler):
    def log_message(self, *args):  # keep test output quiet
        pass

    def reply(self, status: int, body: bytes, content_type: str, length: int | None = None, **headers):
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body) if length is None else length))
        for key, value in headers.items():
            self.send_header(key, value)
        self.end_headers()
        try:
            self.wfile.write(body)
        except OSError:  # the client hung up on purpose (size limit)
            pass

    def do_GET(self):
        self.server.seen.append((self.path, self.headers.get("Host")))
        port = self.server.server_address[1]
        routes = {
            "/image.png": lambda: self.reply(200, PNG_BYTES, "image/png"),
            "/octet": lambda: self.reply(200, PNG_BYTES, "application/octet-stream"),
            "/missing.png": lambda: self.reply(404, b"not found", "text/plain"),
            "/error": lambda: self.reply(500, b"boom", "text/plain"),
            "/page": lambda: self.reply(200, HTML, "text/html; charset=utf-8"),
            "/html-as-jpeg": lambda: self.reply(200, HTML, "image/jpeg"),
            "/text": lambda: self.reply(200, b"just some text, not pixels", "text/plain"),
            "/redirect": lambda: self.reply(302, b"", "text/plain", Location="/image.png"),
            "/redirect-loop": lambda: self.reply(302, b"", "text/plain", Location="/redirect-loop"),
            "/to-metadata": lambda: self.reply(
                302, b"", "text/plain", Location="http://169.254.169.254/latest/meta-data/"
            ),
            "/to-private": lambda: self.reply(301, b"", "text/plain", Location="http://10.0.0.1/a.png"),
            "/to-other-loopback": lambda: self.reply(
                307, b"", "text/plain", Location=f"http://127.0.0.2:{port}/image.png"
            ),
            "/declared-huge": lambda: self.reply(200, PNG_BYTES, "image/png", length=50 * 1024 * 1024),
        }
        if self.path in routes:
            routes[self.path]()
        elif self.path == "/slow":
            time.sleep(1.5)
            self.reply(200, PNG_BYTES, "image/png")
        elif self.path.startswith("/slow-hops/"):  # /slow-hops/N: 0.4 s, then a redirect to N-1
            hops = int(self.path.rsplit("/", 1)[1])
            time.sleep(0.4)
            if hops:
                self.reply(302, b"", "text/plain", Location=f"/slow-hops/{hops - 1}")
            else:
                self.reply(200, PNG_BYTES, "image/png")
        elif self.path == "/stream-huge":  # no Content-Length: the body runs until the socket closes
            self.send_response(200)
            self.send_header("Content-Type", "image/png")
            self.end_headers()
            try:
                for _ in range(64):
                    self.wfile.write(b"\0" * 16384)
            except OSError:
                pass
        else:
            self.reply(404, b"", "text/plain")


@pytest.fixture(scope="module")
def server():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    httpd.seen = []
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()


def base(server) -> str:
    return f"http://127.0.0.1:{server.server_address[1]}"


OPEN = Settings(allow_private_urls=True, fetch_timeout=5)


def test_local_server_refused_by_default_and_allowed_when_set(server):
    url = base(server) + "/image.png"
    before = len(server.seen)
    with pytest.raises(URLNotAllowedError) as info:
        load_image(url, settings=Settings())
    assert info.value.kind == "ssrf" and "127.0.0.1" in info.value.reason
    assert len(server.seen) == before  # refused before any connection
    loaded = load_image(url, settings=OPEN)
    assert loaded.uri == url and loaded.format == "PNG" and loaded.width == 48
    assert loaded.data == PNG_BYTES and loaded.sha256 == hashlib.sha256(PNG_BYTES).hexdigest()
    assert load_image(base(server) + "/octet", settings=OPEN).format == "PNG"


def test_redirect_is_followed(server):
    assert fetch_url(base(server) + "/redirect", settings=OPEN) == PNG_BYTES


@pytest.mark.parametrize(
    ("path", "kind", "error"),
    [
        ("/missing.png", "http_status", FetchError),
        ("/error", "http_status", FetchError),
        ("/page", "not_image_content", FetchError),
        ("/html-as-jpeg", "not_image_content", FetchError),
        ("/text", "not_image_content", FetchError),
        ("/redirect-loop", "fetch_failed", FetchError),
        ("/declared-huge", "too_large", TooLargeError),
    ],
)
def test_url_failures(server, path, kind, error):
    url = base(server) + path
    with pytest.raises(error) as info:
        load_image(url, settings=OPEN)
    assert info.value.kind == kind and info.value.item == url and url in str(info.value)


def test_streamed_body_stops_at_the_byte_limit(server):
    with pytest.raises(TooLargeError, match="over the 100000-byte limit"):
        fetch_url(
            base(server) + "/stream-huge", settings=Settings(allow_private_urls=True, max_image_bytes=100_000)
        )


def test_slow_url_times_out(server):
    started = time.monotonic()
    with pytest.raises(FetchError) as info:
        load_image(base(server) + "/slow", settings=Settings(allow_private_urls=True, fetch_timeout=0.3))
    assert info.value.kind == "timeout"
    assert time.monotonic() - started < 1.4


def test_the_fetch_timeout_covers_every_redirect_hop(server):
    """Seven slow hops of 0.4 s each fit a 1.5 s timeout hop by hop but not in total: one deadline."""
    settings = Settings(allow_private_urls=True, fetch_timeout=1.5)
    assert fetch_url(base(server) + "/slow-hops/1", settings=settings) == PNG_BYTES
    started = time.monotonic()
    with pytest.raises(FetchError) as info:
        fetch_url(base(server) + "/slow-hops/6", settings=settings)  # 2.8 s of hops in all
    assert info.value.kind == "timeout" and "1.5 s" in info.value.reason
    assert time.monotonic() - started < 2.6


@pytest.mark.parametrize(
    ("path", "refused"),
    [("/to-metadata", "169.254.169.254"), ("/to-private", "10.0.0.1"), ("/to-other-loopback", "127.0.0.2")],
)
def test_every_redirect_hop_is_checked(server, path, refused):
    # the first hop is allowed by a one-address allow-list; the hop it redirects to is not
    settings = NetSettings(allowed_private_networks=["127.0.0.1/32"], fetch_timeout=5)
    url = base(server) + path
    with pytest.raises(URLNotAllowedError) as info:
        load_image(url, settings=settings)
    assert info.value.item == url and f"redirect to http://{refused}" in info.value.reason
    assert server.seen[-1][0] == path  # the first hop was fetched, the refused one never was


def test_request_goes_to_the_checked_ip_with_original_host(server, monkeypatch):
    """DNS rebinding: a name is resolved once, checked, and the connection uses that IP."""
    real = socket.getaddrinfo
    lookups = []

    def fake_dns(host, *args, **kwargs):
        if host == "shop-images.invalid":
            lookups.append(host)
            # a rebinding resolver would answer differently the second time
            ip = "127.0.0.1" if len(lookups) == 1 else "10.0.0.1"
            return real(ip, *args, **kwargs)
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", fake_dns)
    port = server.server_address[1]
    settings = NetSettings(allowed_private_networks=["127.0.0.1/32"], fetch_timeout=5)
    assert fetch_url(f"http://shop-images.invalid:{port}/image.png", settings=settings) == PNG_BYTES
    assert lookups == ["shop-images.invalid"]
    assert server.seen[-1] == ("/image.png", f"shop-images.invalid:{port}")
