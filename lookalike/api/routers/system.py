"""GET /v1/stats, /healthz (the process answers) and /readyz (database reachable, model loadable)."""

from __future__ import annotations

import logging
from pathlib import PurePath
from urllib.parse import urlsplit, urlunsplit

import anyio
import anyio.to_thread
from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse, Response

from lookalike.api.deps import ServiceDep, require_read_key
from lookalike.api.routers.search import ERRORS
from lookalike.api.schemas import HealthStatus, StatsPublic

router = APIRouter(tags=["system"])
log = logging.getLogger("lookalike.api")

READY_TIMEOUT_S = 60.0  # the first check loads the model
WARM_UP_WAIT_S = 5.0  # how long /readyz waits for a warm-up in progress before answering 503


def redact_db_url(url: str) -> str:
    """Drop the password (and user) from a database URL; of a file path only its name is shown
    (where the server keeps its files is nobody's business)."""
    if "://" not in url:
        return PurePath(url).name
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


@router.get(
    "/v1/stats",
    response_model=StatsPublic,
    responses=ERRORS,
    summary="What the catalog holds",
    dependencies=[Depends(require_read_key)],
)
def stats(service: ServiceDep) -> StatsPublic:
    """Product, image and embedding counts, the models and the categories (with product counts)."""
    catalog = service.catalog
    s = catalog.stats()
    text = bool(catalog.settings.text_model) and not service.warm_up.text_state.startswith("failed")
    return StatsPublic(**{**s, "db": redact_db_url(str(s["db"])), "text_search": text})


@router.get("/healthz", response_model=HealthStatus, summary="Liveness")
async def healthz() -> HealthStatus:
    """The process is up and its event loop answers (no dependency is checked)."""
    return HealthStatus(status="ok")


def _check_database(service) -> str:
    service.catalog.store.generation()
    return "ok"


def _check_model(service) -> str:
    embedder = service.catalog.embedder()
    return f"ok ({service.catalog.model}, {embedder.dim} dims)"


@router.get(
    "/readyz",
    response_model=HealthStatus,
    summary="Readiness",
    responses={503: {"model": HealthStatus, "description": "Not ready"}},
)
async def readyz(service: ServiceDep) -> JSONResponse:
    """Ready when the database answers, the catalog's model loads and the search index is built or
    loaded (the warm-up runs once, at startup under `lookalike serve`, or on the first call here).
    503 with the failing or pending check otherwise."""
    checks: dict[str, str] = {}
    ready = True
    for name, check in (("database", _check_database), ("model", _check_model)):
        try:
            with anyio.fail_after(READY_TIMEOUT_S):
                checks[name] = await anyio.to_thread.run_sync(check, service, abandon_on_cancel=True)
        except TimeoutError:
            checks[name] = f"timed out after {READY_TIMEOUT_S:g} s"
            ready = False
        except Exception as exc:  # report the reason, never a trace
            log.warning("readiness check %s failed: %s", name, exc)
            checks[name] = f"failed: {type(exc).__name__}: {exc}"
            ready = False
    if ready:
        warm = service.warm_up
        warm.start()
        await anyio.to_thread.run_sync(warm.wait, WARM_UP_WAIT_S, abandon_on_cancel=True)
        checks["index"] = warm.state
        ready = warm.state == "ok"
        if service.settings.text_model:  # words and tags: reported, but photo search does not need it
            checks["text_model"] = warm.text_state
    body = HealthStatus(status="ok" if ready else "unavailable", checks=checks)
    return JSONResponse(body.model_dump(), status_code=200 if ready else 503)


# load balancers often probe with HEAD: the same answers without a body (not in the API docs)
@router.head("/healthz", include_in_schema=False)
async def healthz_head() -> Response:
    return Response(status_code=200)


@router.head("/readyz", include_in_schema=False)
async def readyz_head(service: ServiceDep) -> Response:
    return Response(status_code=(await readyz(service)).status_code)
