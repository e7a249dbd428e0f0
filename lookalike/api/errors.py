"""Map exceptions to JSON ``{"error": {"code", "message"}}`` responses with the right status.

Library errors carry a ``.code``; this module decides the HTTP status. Nothing here ever puts a
stack trace in a response: unexpected exceptions are logged and answered with a generic 500.
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from lookalike.api.schemas import PRODUCT_ID_PATTERN
from lookalike.errors import (
    ImageError,
    InvalidRequest,
    LookalikeError,
    ModelError,
    NotFoundError,
    StoreError,
    TooLargeError,
    UnsupportedFormatError,
)

log = logging.getLogger("lookalike.api")

#: what a product id may hold (schemas.PRODUCT_ID_PATTERN), said in words
PRODUCT_ID_RULE = (
    " (1-128 letters, digits, spaces and . _ : @ + = ~ - ( ) [ ] # & , ' %; starting with a letter "
    "or digit; no slash, backslash, quote, ! < > or control characters)"
)


class APIError(Exception):
    """An error the API itself raises (auth, limits, content type): status + code + message."""

    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers


def error_body(code: str, message: str) -> dict:
    return {"error": {"code": code, "message": message}}


def error_response(
    status: int, code: str, message: str, headers: dict[str, str] | None = None
) -> JSONResponse:
    return JSONResponse(error_body(code, message), status_code=status, headers=headers)


#: image failure kinds (ImageError.kind) that are the client's fault in a specific way
_KIND_STATUS = {"too_large": 413, "too_many_pixels": 413, "unsupported_format": 415}


def status_for(exc: LookalikeError) -> int:
    """The HTTP status for a library error."""
    if isinstance(exc, TooLargeError):
        return 413
    if isinstance(exc, UnsupportedFormatError):
        return 415
    if isinstance(exc, ImageError):
        return _KIND_STATUS.get(exc.kind, 400)
    if isinstance(exc, NotFoundError):
        return 404
    if isinstance(exc, InvalidRequest):
        return 422
    if isinstance(exc, ModelError | StoreError):
        return 503
    return 400


def _validation_message(exc: RequestValidationError) -> str:
    parts = []
    for err in exc.errors()[:5]:
        where = ".".join(str(p) for p in err.get("loc", ()) if p not in ("body", "query", "path"))
        msg = str(err.get("msg", "")).removeprefix("Value error, ")
        value = err.get("input")
        if err.get("type") == "string_pattern_mismatch" and isinstance(value, str):
            pattern = (err.get("ctx") or {}).get("pattern")
            what = "product id" if pattern in (None, PRODUCT_ID_PATTERN) else "value"
            msg = f"{value[:80]!r} is not a valid {what}" + (PRODUCT_ID_RULE if what == "product id" else "")
        parts.append(f"{where}: {msg}" if where else msg)
    return "; ".join(parts) or "invalid request"


def _database_errors() -> list[type[Exception]]:
    """Driver errors (database down, locked, closed) that the stores let through: 503, not 500."""
    import sqlite3

    errors: list[type[Exception]] = [sqlite3.Error]
    try:
        import psycopg  # its pool's errors (PoolTimeout, PoolClosed) derive from psycopg.Error

        errors.append(psycopg.Error)
    except ImportError:
        pass
    return errors


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(APIError)
    async def _api_error(request: Request, exc: APIError) -> JSONResponse:
        return error_response(exc.status, exc.code, exc.message, exc.headers)

    @app.exception_handler(LookalikeError)
    async def _lookalike_error(request: Request, exc: LookalikeError) -> JSONResponse:
        status = status_for(exc)
        if status >= 500:
            log.warning("%s %s: %s", request.method, request.url.path, exc)
        return error_response(status, exc.code, str(exc))

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        return error_response(422, "invalid_request", _validation_message(exc))

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        codes = {404: "not_found", 405: "method_not_allowed", 413: "too_large", 415: "unsupported_media_type"}
        message = exc.detail if isinstance(exc.detail, str) else "request failed"
        if exc.status_code == 404 and message == "Not Found":
            message = f"no such endpoint: {request.method} {request.url.path}"
        return error_response(
            exc.status_code, codes.get(exc.status_code, "http_error"), message, getattr(exc, "headers", None)
        )

    async def _database_error(request: Request, exc: Exception) -> JSONResponse:
        log.error(
            "database error in %s %s: %s: %s", request.method, request.url.path, type(exc).__name__, exc
        )
        return error_response(
            503, "store_unavailable", "the catalog database is unavailable; try again later"
        )

    for exc_type in _database_errors():
        app.add_exception_handler(exc_type, _database_error)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error in %s %s", request.method, request.url.path)
        return error_response(500, "internal_error", "internal server error (see the server log)")
