"""The service state shared by every request: the catalog, the settings, and the inference gate.

Inference (image decode + embed + search) is CPU work: it runs in worker threads behind a
capacity limiter so the event loop stays free, and an admission counter bounds the work that may
be running or waiting at once; past that bound requests are refused with 429 instead of piling up.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import TypeVar

import anyio
import anyio.to_thread
import numpy as np

from lookalike.api.errors import APIError
from lookalike.catalog import Catalog
from lookalike.config import Settings

T = TypeVar("T")
log = logging.getLogger("lookalike.api")


def _default_threads() -> int:
    return max(1, min(4, os.cpu_count() or 1))


class InferenceGate:
    """At most ``threads`` inference calls run at once; at most ``max_pending`` run or wait."""

    def __init__(self, threads: int, max_pending: int):
        self.threads = threads
        self.max_pending = max_pending
        self._pending = 0
        self._lock = threading.Lock()
        self._limiter: anyio.CapacityLimiter | None = None

    @property
    def pending(self) -> int:
        return self._pending

    def _limiter_for_loop(self) -> anyio.CapacityLimiter:
        if self._limiter is None:  # created lazily: a limiter belongs to the running event loop
            self._limiter = anyio.CapacityLimiter(self.threads)
        return self._limiter

    def _release(self) -> None:
        with self._lock:
            self._pending -= 1

    async def run(self, fn: Callable[..., T], *args) -> T:
        """Run ``fn(*args)`` in a worker thread, or raise 429 when too much work is queued.

        If the request is cancelled (client gone, request timeout), a call that already started
        finishes in its thread and still counts against ``max_pending`` until it does."""
        with self._lock:
            if self._pending >= self.max_pending:
                raise APIError(
                    429,
                    "too_many_requests",
                    f"the server is busy ({self._pending} searches running or queued); retry shortly",
                    headers={"Retry-After": "1"},
                )
            self._pending += 1
        state = {"started": False, "dropped": False}

        def call() -> T:
            with self._lock:
                if state["dropped"]:  # the request went away before this thread got to run
                    return None  # type: ignore[return-value]  (nobody waits for this result)
                state["started"] = True
            try:
                return fn(*args)
            finally:
                self._release()

        try:
            return await anyio.to_thread.run_sync(
                call, limiter=self._limiter_for_loop(), abandon_on_cancel=True
            )
        finally:
            with self._lock:
                if not state["started"]:
                    state["dropped"] = True
                    self._pending -= 1


class ProductLocks:
    """One asyncio lock per product id being written, so concurrent writes to a product queue up."""

    def __init__(self) -> None:
        self._locks: dict[str, tuple[asyncio.Lock, int]] = {}

    @asynccontextmanager
    async def hold(self, product_id: str) -> AsyncIterator[None]:
        lock, users = self._locks.get(product_id, (None, 0))
        if lock is None:
            lock = asyncio.Lock()
        self._locks[product_id] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._locks[product_id]
            if users <= 1:
                del self._locks[product_id]
            else:
                self._locks[product_id] = (lock, users - 1)


class WarmUp:
    """Load the model and build (or load) the search index in a background thread, once.

    A large catalog's vector index can take a while to build the first time; doing it here keeps
    that off the first user's request, and ``/readyz`` says "warming up" until it is done."""

    def __init__(self, catalog: Catalog):
        self.catalog = catalog
        self.state = "not started"
        self._thread: threading.Thread | None = None
        self._done = threading.Event()
        self._lock = threading.Lock()

    def start(self) -> None:
        with self._lock:
            running = self._thread is not None and not self._done.is_set()
            if running or self.state == "ok":
                return
            self.state = "warming up (loading the model, building the search index)"
            self._done.clear()
            self._thread = threading.Thread(target=self._run, name="lookalike-warm-up", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        try:
            embedder = self.catalog.embedder()
            self.catalog.search_vector(np.zeros(embedder.dim, dtype=np.float32), k=1)
            self.state = "ok"
        except Exception as exc:  # reported by /readyz; a later /readyz retries
            log.warning("warm-up failed: %s: %s", type(exc).__name__, exc)
            self.state = f"failed: {type(exc).__name__}: {exc}"
        finally:
            self._done.set()

    def wait(self, timeout: float) -> bool:
        return self._done.wait(timeout)


class Service:
    def __init__(
        self,
        catalog: Catalog,
        settings: Settings,
        *,
        threads: int | None = None,
        max_pending: int | None = None,
        own_catalog: bool = True,
    ):
        self.catalog = catalog
        self.settings = settings
        threads = threads or getattr(settings, "inference_threads", None) or _default_threads()
        max_pending = max_pending or getattr(settings, "max_pending_requests", None) or 64
        self.inference = InferenceGate(threads, max(max_pending, threads))
        self.product_locks = ProductLocks()
        self.own_catalog = own_catalog
        self.warm_up = WarmUp(catalog)

    def close(self) -> None:
        if self.own_catalog:
            self.catalog.close()
