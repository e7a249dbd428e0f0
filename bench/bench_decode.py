"""Memory and time to load small files of huge images (decompression bombs under the pixel limit).

    .venv/bin/python bench/bench_decode.py

Each case is a file a hostile client can send in ~100 KB: a 16-bit grey PNG, an 8-bit RGBA PNG and
a JPEG, each 7000 x 7000 = 49 M pixels (just under the 50 M ``max_image_pixels`` limit). Each is
loaded by ``lookalike.images.load_image`` in a fresh process, once with the default
``max_image_side`` (2048: the image is shrunk right after decoding, JPEGs decode at a reduced
scale) and once with the shrinking off (``max_image_side`` = 10**6), which is how the loader worked
before. Reported: the process's peak resident memory above its state before the load, and the
load's wall time.
"""

from __future__ import annotations

import argparse
import io
import json
import platform
import struct
import subprocess
import sys
import tempfile
import zlib
from datetime import UTC, datetime
from pathlib import Path

SIDE = 7000


def _png(width: int, height: int, bit_depth: int, colour_type: int, channels: int) -> bytes:
    """A PNG of zeros, compressed row by row (never held whole in memory)."""
    row = b"\0" + b"\0" * (width * channels * bit_depth // 8)
    z = zlib.compressobj(9)
    data = b"".join(z.compress(row) for _ in range(height)) + z.flush()

    def chunk(tag: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + tag + body + struct.pack(">I", zlib.crc32(tag + body))

    header = struct.pack(">IIBBBBB", width, height, bit_depth, colour_type, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", data) + chunk(b"IEND", b"")


def _jpeg() -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("L", (SIDE, SIDE), 128).save(buf, format="JPEG", quality=50)
    return buf.getvalue()


CHILD = """
import json, resource, sys, time
from lookalike.config import Settings
from lookalike.images import load_image
data = open(sys.argv[1], "rb").read()
settings = Settings(max_image_side=int(sys.argv[2]))
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
t = time.perf_counter()
loaded = load_image(data, settings=settings)
elapsed = time.perf_counter() - t
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"bytes": len(data), "decoded": list(loaded.image.size), "peak_mb": (peak - before) / 1024,
                  "seconds": elapsed}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, default=None, help="Also write the results as JSON here.")
    args = parser.parse_args()
    cases = {
        "16-bit grey PNG": _png(SIDE, SIDE, 16, 0, 1),
        "8-bit RGBA PNG": _png(SIDE, SIDE, 8, 6, 4),
        "grey JPEG": _jpeg(),
    }
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, data in cases.items():
            path = Path(tmp) / "image"
            path.write_bytes(data)
            for label, side in (("shrunk (default)", 2048), ("not shrunk", 10**6)):
                out = subprocess.run(
                    [sys.executable, "-c", CHILD, str(path), str(side)],
                    capture_output=True,
                    text=True,
                    check=True,
                )
                result = json.loads(out.stdout)
                rows.append({"case": name, "mode": label, **result})
                print(
                    f"{name:16s} {len(data) / 1024:7.0f} KB  {label:17s} decoded {result['decoded']}  "
                    f"peak +{result['peak_mb']:6.0f} MB  {result['seconds']:5.2f} s",
                    flush=True,
                )
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        meta = {"date": datetime.now(UTC).isoformat(timespec="seconds"), "machine": platform.platform()}
        args.out.write_text(json.dumps({**meta, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
