"""Build a corpus of good and broken image files with Pillow, for image-pipeline and indexing tests.

``build_corpus(root)`` writes flat files into ``root`` and returns ``{file name: CorpusItem}``.
Good items carry the expected format and (EXIF-corrected) size; bad items carry the expected
``ImageError.kind``. Everything is generated on the fly (no binary fixtures) in well under a second.
"""

from __future__ import annotations

import io
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

RED = (255, 0, 0)
BLUE = (0, 0, 255)
#: the size of the oversize file: just over the default 20 MB limit (written sparse, costs no disk)
OVERSIZE_BYTES = 20 * 1024 * 1024 + 1


@dataclass(frozen=True)
class CorpusItem:
    path: Path
    #: expected ImageError.kind, or None for a good image
    kind: str | None = None
    #: expected LoadedImage.format for good images
    format: str | None = None
    #: expected (width, height) after EXIF orientation, for good images
    size: tuple[int, int] | None = None

    @property
    def good(self) -> bool:
        return self.kind is None


def encode(image: Image.Image, fmt: str, **params) -> bytes:
    out = io.BytesIO()
    image.save(out, format=fmt, **params)
    return out.getvalue()


def gradient_rgb(width: int = 48, height: int = 32) -> Image.Image:
    """A smooth colour gradient: compresses well and survives JPEG recognisably."""
    x = np.linspace(0, 255, width)[None, :].repeat(height, 0)
    y = np.linspace(0, 255, height)[:, None].repeat(width, 1)
    arr = np.stack([x, y, 255 - x], axis=-1).astype(np.uint8)
    return Image.fromarray(arr, "RGB")


def halves(width: int, height: int, left=RED, right=BLUE) -> Image.Image:
    """Left half one colour, right half another (to check orientation)."""
    img = Image.new("RGB", (width, height), right)
    img.paste(left, (0, 0, width // 2, height))
    return img


def exif_rotated_jpeg() -> bytes:
    """Stored 40x20 (left red, right blue) with EXIF orientation 6: displays 20x40, red on top."""
    exif = Image.Exif()
    exif[0x0112] = 6
    return encode(halves(40, 20), "JPEG", quality=95, exif=exif.tobytes())


def rgba_half_transparent() -> Image.Image:
    """Left half opaque blue, right half fully transparent (must become white)."""
    img = Image.new("RGBA", (32, 16), (0, 0, 255, 255))
    img.paste((255, 0, 0, 0), (16, 0, 32, 16))
    return img


def gray16() -> Image.Image:
    """16-bit grey ramp 0..65535 (left to right): naive conversion clips it to white."""
    ramp = np.linspace(0, 65535, 64).astype(np.uint16)[None, :].repeat(16, 0)
    return Image.fromarray(ramp)


def animated_gif() -> bytes:
    frames = [Image.new("RGB", (24, 24), RED), Image.new("RGB", (24, 24), BLUE)]
    return encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)


def png_header_only(width: int, height: int) -> bytes:
    """A PNG signature + IHDR claiming a huge size, with a tiny IDAT: a decompression bomb header."""

    def chunk(tag: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + tag + body + struct.pack(">I", zlib.crc32(tag + body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\0" * 64))
        + chunk(b"IEND", b"")
    )


def good_files() -> dict[str, tuple[bytes, str, tuple[int, int]]]:
    """name -> (bytes, expected format, expected size)."""
    rgb = gradient_rgb()
    return {
        "rgb.jpg": (encode(rgb, "JPEG", quality=90), "JPEG", (48, 32)),
        "gray.jpg": (encode(rgb.convert("L"), "JPEG"), "JPEG", (48, 32)),
        "cmyk.jpg": (encode(rgb.convert("CMYK"), "JPEG", quality=95), "JPEG", (48, 32)),
        "exif_rotated.jpg": (exif_rotated_jpeg(), "JPEG", (20, 40)),
        "rgb.png": (encode(rgb, "PNG"), "PNG", (48, 32)),
        "palette.png": (encode(rgb.convert("P", palette=Image.Palette.ADAPTIVE), "PNG"), "PNG", (48, 32)),
        "rgba.png": (encode(rgba_half_transparent(), "PNG"), "PNG", (32, 16)),
        "la.png": (encode(rgba_half_transparent().convert("LA"), "PNG"), "PNG", (32, 16)),
        "bilevel.png": (
            encode(halves(32, 16, (255, 255, 255), (0, 0, 0)).convert("1"), "PNG"),
            "PNG",
            (32, 16),
        ),
        "gray16.png": (encode(gray16(), "PNG"), "PNG", (64, 16)),
        "animated.gif": (animated_gif(), "GIF", (24, 24)),
        "rgb.tif": (encode(rgb, "TIFF"), "TIFF", (48, 32)),
        "gray16.tif": (encode(gray16(), "TIFF"), "TIFF", (64, 16)),
        "rgb.bmp": (encode(rgb, "BMP"), "BMP", (48, 32)),
        "rgb.webp": (encode(rgb, "WEBP", lossless=True), "WEBP", (48, 32)),
        "rgba.webp": (encode(rgba_half_transparent(), "WEBP", lossless=True), "WEBP", (32, 16)),
        "Ünïcødé 画像.png": (encode(rgb, "PNG"), "PNG", (48, 32)),
    }


def bad_files() -> dict[str, tuple[bytes | None, str]]:
    """name -> (bytes, expected kind); bytes None means written specially (see build_corpus)."""
    big_jpeg = encode(gradient_rgb(400, 300), "JPEG", quality=90)
    big_png = encode(gradient_rgb(400, 300), "PNG")
    big_webp = encode(gradient_rgb(400, 300), "WEBP")
    corrupt_png = bytearray(big_png)
    corrupt_png[len(big_png) // 2 : len(big_png) // 2 + 16] = b"\xff" * 16  # damage compressed data
    return {
        "empty.jpg": (b"", "empty"),
        "truncated.jpg": (big_jpeg[: len(big_jpeg) // 2], "truncated"),
        "truncated.png": (big_png[: len(big_png) // 2], "truncated"),
        "truncated.webp": (big_webp[: len(big_webp) // 2], "truncated"),
        "corrupt.png": (bytes(corrupt_png), "invalid"),
        "not_an_image.jpg": (b"This is a plain text file pretending to be a JPEG.\n" * 20, "not_image"),
        "page.png": (b"<!doctype html><html><body>404 Not Found</body></html>", "not_image"),
        "bomb.png": (encode(Image.new("1", (8000, 8000)), "PNG"), "too_many_pixels"),
        "bomb_header.png": (png_header_only(100_000, 100_000), "too_many_pixels"),
        "icon.ico": (encode(gradient_rgb(32, 32), "ICO"), "unsupported_format"),
        "image.ppm": (encode(gradient_rgb(), "PPM"), "unsupported_format"),
        "oversize.jpg": (None, "too_large"),
    }


def build_corpus(root: Path) -> dict[str, CorpusItem]:
    """Write every good and bad file into ``root`` (flat, no subfolders) and describe them."""
    root.mkdir(parents=True, exist_ok=True)
    items: dict[str, CorpusItem] = {}
    for name, (data, fmt, size) in good_files().items():
        path = root / name
        path.write_bytes(data)
        items[name] = CorpusItem(path, None, fmt, size)
    for name, (data, kind) in bad_files().items():
        path = root / name
        if data is None:  # oversize: a real JPEG start, extended sparsely past the limit
            with open(path, "wb") as f:
                f.write(encode(gradient_rgb(), "JPEG"))
                f.truncate(OVERSIZE_BYTES)
        else:
            path.write_bytes(data)
        items[name] = CorpusItem(path, kind)
    return items
