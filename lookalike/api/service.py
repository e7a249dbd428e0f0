"""The service state shared by every request: the catalog, the settings, and the inference gate.

Inference (image decode + embed + search) is CPU work: it runs on a pool of worker threads so
the event loop stays free, and an admission counter bounds the work that may
be running or waiting at once; past that bound requests are refused with 429 instead of piling up.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
from collections.abc import AsyncIterator, Callable
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import asynccontextmanager
from typing import TypeVar

import numpy as np

from lookalike.api.errors import APIError
from lookalike.catalog import Catalog
from lookalike.config import Settings

T = TypeVar("T")
log = logging.getLogger("lookalike.api")


def _default_threads() -> int:
    return max(1, min(4, os.cpu_count() or 1))


class InferenceGate:
    """At most ``threads`` inference calls run at once; at most ``max_pending`` run or wait.

    The calls run on this gate's own thread pool. A request that is cancelled (client gone,
    request time limit) while its call waits takes the call out of the queue; a call that has
    started cannot be stopped, and keeps its thread, its place in ``max_pending`` and anything it
    holds (see :meth:`ProductLocks.hold`) until it returns. So the bounds hold for work whose
    answer nobody waits for any more, too."""

    def __init__(self, threads: int, max_pending: int):
        self.threads = threads
        self.max_pending = max_pending
        self._pending = 0
        self._lock = threading.Lock()
        self._pool: ThreadPoolExecutor | None = None  # made on first use, again after close()

    @property
    def pending(self) -> int:
        return self._pending

    def _release(self, _: object = None) -> None:
        with self._lock:
            self._pending -= 1

    async def run(self, fn: Callable[..., T], *args, holding: Held | None = None) -> T:
        """Run ``fn(*args)`` in a worker thread, or raise 429 when too much work is queued.

        ``holding``: a product lock that stays held until the call returns, even if this request
        is cancelled first."""
        with self._lock:
            if self._pending >= self.max_pending:
                raise APIError(
                    429,
                    "too_many_requests",
                    f"the server is busy ({self._pending} searches running or queued); retry shortly",
                    headers={"Retry-After": "1"},
                )
            self._pending += 1
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self.threads, thread_name_prefix="lookalike-inference")
            future = self._pool.submit(fn, *args)
        future.add_done_callback(self._release)  # run, failed or taken out of the queue
        if holding is not None:
            holding.until(future)
        return await asyncio.wrap_future(future)  # cancelling this cancels a call still queued

    def close(self) -> None:
        """Drop the calls still queued; calls already running finish in their threads."""
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)


class Held:
    """A product lock held by a request; :meth:`until` extends it to the end of a thread's call."""

    def __init__(self) -> None:
        self.future: Future | None = None

    def until(self, future: Future) -> None:
        self.future = future


class ProductLocks:
    """One lock per product id being written, so concurrent writes to a product queue up in order.

    A write whose request timed out while its call was running keeps the lock until the call
    returns: a later write to the product waits for it and lands after it."""

    def __init__(self) -> None:
        self._locks: dict[str, tuple[asyncio.Lock, int]] = {}

    @asynccontextmanager
    async def hold(self, product_id: str) -> AsyncIterator[Held]:
        lock, users = self._locks.get(product_id, (None, 0))
        if lock is None:
            lock = asyncio.Lock()
        self._locks[product_id] = (lock, users + 1)
        try:
            await lock.acquire()
        except BaseException:
            self._leave(product_id)
            raise
        held = Held()
        try:
            yield held
        finally:
            if held.future is None or held.future.done():
                self._unlock(product_id, lock)
            else:  # the call outlives the request: unlock when it returns
                loop = asyncio.get_running_loop()
                held.future.add_done_callback(lambda _: _call_soon(loop, self._unlock, product_id, lock))

    def _unlock(self, product_id: str, lock: asyncio.Lock) -> None:
        lock.release()
        self._leave(product_id)

    def _leave(self, product_id: str) -> None:
        lock, users = self._locks[product_id]
        if users <= 1:
            del self._locks[product_id]
        else:
            self._locks[product_id] = (lock, users - 1)


def _call_soon(loop: asyncio.AbstractEventLoop, fn: Callable[..., object], *args) -> None:
    try:
        loop.call_soon_threadsafe(fn, *args)
    except RuntimeError:  # that event loop has closed: no task of it waits, release here
        fn(*args)


class WarmUp:
    """Load the model and build (or load) the search index in a background thread, once.

    A large catalog's vector index can take a while to build the first time; doing it here keeps
    that off the first user's request, and ``/readyz`` says "warming up" until it is done."""

    def __init__(self, catalog: Catalog):
        self.catalog = catalog
        self.state = "not started"
        #: the text model's own check (LOOKALIKE_TEXT_MODEL): a broken one turns words and tags off,
        #: not the whole service
        self.text_state = "not configured" if not catalog.settings.text_model else "not loaded yet"
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
            try:
                self._warm_text()
            finally:
                self._done.set()  # whatever happened: /readyz never waits on a warm-up that ended

    def _warm_text(self) -> None:
        if not self.catalog.settings.text_model:
            return
        try:  # loads, and fits this catalog's vectors
            self.catalog.text_model().tag_vectors()
            self.text_state = "ok"
        except Exception as exc:
            log.warning("text model failed: %s: %s", type(exc).__name__, exc)
            self.text_state = f"failed: {type(exc).__name__}: {exc}"

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
        self.inference.close()
        if self.own_catalog:
            self.catalog.close()
