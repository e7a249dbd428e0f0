"""The FastAPI application: ``create_app(settings, db)`` builds it, ``serve(db, host, port)`` runs it."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import FileResponse, HTMLResponse
from fastapi.staticfiles import StaticFiles

from lookalike import __version__
from lookalike.api.errors import install_error_handlers
from lookalike.api.middleware import BodyLimitMiddleware, SecurityHeadersMiddleware, TimeoutMiddleware
from lookalike.api.routers import all_routers
from lookalike.api.service import Service
from lookalike.catalog import Catalog
from lookalike.config import Settings, get_settings
from lookalike.errors import LookalikeError

STATIC_DIR = Path(__file__).resolve().parent / "static"
#: API keys that must never protect a real deployment
PLACEHOLDER_KEYS = {"changethis", "changeme", "secret", "password", "apikey", "api-key", "test"}
log = logging.getLogger("lookalike.api")


class ServiceConfigError(LookalikeError):
    code = "bad_config"


DESCRIPTION = """
Visual search over a product catalog: send a photo (upload, URL or base64) or a product id and get
the products that look most like it.

* **Reads** (search, products, images, stats) are open unless the server sets `LOOKALIKE_PROTECT_READS=1`.
* **Writes** (`PUT`/`DELETE /v1/products/{id}`, `POST /v1/index-jobs`) need the `X-API-Key` header
  when the server has `LOOKALIKE_API_KEY`; outside development a key must be configured for writes
  to work at all. In development without a key, writes are taken only at an IP address, `localhost`
  or a one-label host name (not at a domain name: DNS rebinding).
* **Errors** are always `{"error": {"code": "...", "message": "..."}}`.
* **Limits**: uploads up to `LOOKALIKE_MAX_UPLOAD_BYTES` (10 MB), images up to `LOOKALIKE_MAX_IMAGE_PIXELS`
  (images longer than `LOOKALIKE_MAX_IMAGE_SIDE` px are shrunk to it after decoding), requests up to
  `LOOKALIKE_REQUEST_TIMEOUT` seconds; image URLs must resolve to public addresses, and one
  `LOOKALIKE_FETCH_TIMEOUT` covers every redirect. A write that times out may still complete; a
  later write to the same product waits for it.
"""


def check_settings(settings: Settings) -> None:
    """Refuse configurations that would be insecure or unusable."""
    if settings.verifier not in ("default", "none") and not Path(settings.verifier).is_file():
        raise ServiceConfigError(
            f"LOOKALIKE_VERIFIER={settings.verifier!r} is not 'default', 'none' "
            "or an existing checkpoint file"
        )
    if settings.protect_reads and not settings.api_key:
        raise ServiceConfigError("protect_reads is set but no api_key is configured (set LOOKALIKE_API_KEY)")
    if settings.environment != "development" and settings.api_key is not None:
        key = settings.api_key
        if key.lower() in PLACEHOLDER_KEYS or len(key) < 16:
            raise ServiceConfigError(
                f"LOOKALIKE_API_KEY is a placeholder or shorter than 16 characters; "
                f"set a real secret in {settings.environment}"
            )


def _local_swagger_assets() -> Path | None:
    """Swagger UI's files from the optional ``swagger-ui-py`` package, so /docs works offline."""
    try:
        import swagger_ui
    except ImportError:
        return None
    static = Path(swagger_ui.__file__).resolve().parent / "static"
    return static if (static / "swagger-ui-bundle.js").is_file() else None


def _install_docs(app: FastAPI) -> None:
    assets = _local_swagger_assets()
    if assets is None:  # FastAPI's default page (Swagger UI from a CDN)
        app.add_api_route(
            "/docs",
            lambda: get_swagger_ui_html(openapi_url="/openapi.json", title="lookalike API"),
            include_in_schema=False,
        )
        return
    app.mount("/docs-assets", StaticFiles(directory=assets), name="docs-assets")

    def docs() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url="/openapi.json",
            title="lookalike API",
            swagger_js_url="/docs-assets/swagger-ui-bundle.js",
            swagger_css_url="/docs-assets/swagger-ui.css",
            swagger_favicon_url="/docs-assets/favicon-32x32.png",
        )

    app.add_api_route("/docs", docs, include_in_schema=False)


def create_app(
    settings: Settings | None = None,
    db: str | Path | Catalog | None = None,
    *,
    inference_threads: int | None = None,
    max_pending: int | None = None,
    warm_up: bool = False,
) -> FastAPI:
    """Build the app over a catalog (a path/URL to open, an open Catalog, or the settings' default db).

    ``inference_threads`` searches run at once (default: CPU count, at most 4); beyond
    ``max_pending`` running or queued searches (default 64) requests get 429. ``warm_up`` loads the
    model and the search index in the background at startup instead of on first use."""
    if isinstance(db, Catalog):
        settings = settings or db.settings
        catalog, own = db, False
    else:
        settings = settings or get_settings()
        catalog, own = Catalog.open(db or settings.default_db(), settings=settings), True
    check_settings(settings)
    service = Service(catalog, settings, threads=inference_threads, max_pending=max_pending, own_catalog=own)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if warm_up:
            service.warm_up.start()  # in a thread: the server answers (and /readyz says 503) meanwhile
        yield
        service.close()

    app = FastAPI(
        title="lookalike",
        summary="Visual search for product catalogs",
        description=DESCRIPTION,
        version=__version__,
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
    )
    app.state.service = service
    install_error_handlers(app)
    for router in all_routers():
        app.include_router(router)

    _install_docs(app)
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")

    @app.get("/", include_in_schema=False)
    def page() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html", headers={"Cache-Control": "no-cache"})

    # outermost last: security headers, then the body limit, then the time limit
    app.add_middleware(TimeoutMiddleware, seconds=settings.request_timeout)
    app.add_middleware(BodyLimitMiddleware, max_body_bytes=settings.max_upload_bytes * 4 // 3 + 64 * 1024)
    app.add_middleware(SecurityHeadersMiddleware)
    return app


def serve(
    db: str | Path | None = None,
    host: str = "127.0.0.1",
    port: int = 8000,
    *,
    settings: Settings | None = None,
    log_level: str = "info",
) -> None:
    """Run the service on uvicorn until interrupted (one process; searches run in a thread pool)."""
    import uvicorn

    app = create_app(settings, db, warm_up=True)
    uvicorn.run(
        app,
        host=host,
        port=port,
        log_level=log_level,
        timeout_keep_alive=5,
        timeout_graceful_shutdown=10,
        server_header=False,
    )
