"""Helpers for the service tests: a small real catalog, photos of its items, a live uvicorn server
in a thread, and a local image server (for URL searches, slow responses)."""

from __future__ import annotations

import contextlib
import io
import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

import numpy as np
import uvicorn
from PIL import Image

CATALOG_SIZE = 300


def index_small_catalog(db_url: str, n: int = CATALOG_SIZE) -> str:
    """Index the first ``n`` Fashion-MNIST test items with the pixels model into ``db_url``."""
    from lookalike.catalog import Catalog

    with Catalog.open(db_url) as cat:
        report = cat.index("fashion-mnist:test", model="pixels", limit=n, progress=False)
    assert report.products_indexed == n, report.failures[:3]
    return db_url


def photo_bytes(arr: np.ndarray, fmt: str = "PNG", size: int = 84, angle: float = 0) -> bytes:
    """A colour 'photo' of a catalog item: enlarged (optionally rotated), saved as ``fmt``."""
    img = Image.fromarray(arr)
    if angle:
        img = img.rotate(angle, fillcolor=20)
    img = img.resize((size, size)).convert("RGB")
    buf = io.BytesIO()
    img.save(buf, format=fmt)
    return buf.getvalue()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def live_server(app) -> Iterator[str]:
    """Run ``app`` on a real uvicorn server in a thread; yields its base URL."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=20)


@contextlib.contextmanager
def image_server(images: dict[str, bytes]) -> Iterator[str]:
    """Serve ``images`` by name on 127.0.0.1; ``?delay=S`` waits S seconds before answering, and
    ``?hops=N`` redirects to the same image with N-1 hops left (each hop waits ``delay``)."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 (http.server's naming)
            url = urlparse(self.path)
            query = parse_qs(url.query)
            delay = float(query.get("delay", ["0"])[0])
            hops = int(query.get("hops", ["0"])[0])
            if delay:
                time.sleep(delay)
            if hops > 0:
                self.send_response(302)
                self.send_header("Location", f"{url.path}?delay={delay}&hops={hops - 1}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            data = images.get(url.path.lstrip("/"))
            if data is None:
                self.send_response(404)
                self.end_headers()
                return
            self.send_response(200)
            self.send_header("Content-Type", "image/png")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                self.wfile.write(data)

        def log_message(self, *args):
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()
