"""Pure ASGI middleware: request body limit, request time limit, security headers.

Both limits answer with the same JSON error document as the routes. The body limit refuses a
request from its Content-Length before reading anything, and counts bytes while reading for
bodies without one (chunked uploads).
"""

from __future__ import annotations

import json
import logging

import anyio
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from lookalike.api.errors import APIError, error_body

log = logging.getLogger("lookalike.api")


class BodyTooLarge(APIError):
    def __init__(self, limit: int):
        super().__init__(413, "too_large", f"request body is over the {limit}-byte limit")


async def send_error(send: Send, status: int, code: str, message: str, headers: dict | None = None) -> None:
    # the same bytes as the routes' JSONResponse
    body = json.dumps(error_body(code, message), separators=(",", ":"), ensure_ascii=False).encode()
    raw = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    raw += [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})


class BodyLimitMiddleware:
    def __init__(self, app: ASGIApp, max_body_bytes: int):
        self.app = app
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        limit = self.max_body_bytes
        for name, value in scope.get("headers", ()):
            if name == b"content-length":
                if not value.strip().isdigit():
                    return await send_error(send, 400, "bad_request", "invalid Content-Length header")
                if int(value) > limit:
                    return await send_error(
                        send,
                        413,
                        "too_large",
                        f"request body of {int(value)} bytes is over the {limit}-byte limit",
                        {"connection": "close"},
                    )
        received = 0
        started = False

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyTooLarge(limit)
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except BodyTooLarge as exc:  # raised where no exception handler saw it
            if started:
                raise
            await send_error(send, exc.status, exc.code, exc.message, {"connection": "close"})


class TimeoutMiddleware:
    """Cancel a request that runs longer than ``seconds`` and answer 503 (if nothing was sent yet).

    Work already running in an inference thread finishes there (threads cannot be killed), but
    the client gets its answer on time and the inference gate still counts that work; a write
    that finishes late still lands before any later write to the same product."""

    def __init__(self, app: ASGIApp, seconds: float):
        self.app = app
        self.seconds = seconds

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope.get("path", "").startswith("/v1/"):
            return await self.app(scope, receive, send)
        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            with anyio.fail_after(self.seconds):
                await self.app(scope, receive, tracking_send)
        except TimeoutError:
            log.warning("%s %s timed out after %gs", scope.get("method"), scope.get("path"), self.seconds)
            if not started:
                message = f"the request took longer than {self.seconds:g} s; try again or use a smaller image"
                if scope.get("method") in ("PUT", "DELETE"):
                    message = (
                        f"the request took longer than {self.seconds:g} s; the write may still complete "
                        "(a later write to this product waits for it): read the product before retrying"
                    )
                await send_error(send, 503, "timeout", message, {"retry-after": "1"})


class SecurityHeadersMiddleware:
    """nosniff everywhere; the web page may load only its own scripts and styles (images may come
    from anywhere: the preview of a pasted image URL is loaded by the browser itself)."""

    CSP = (
        b"default-src 'self'; img-src 'self' data: blob: https: http:; style-src 'self'; script-src 'self'; "
        b"connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'"
    )

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        is_page = scope.get("path") == "/" or scope.get("path", "").startswith("/static/")

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                headers.append((b"x-content-type-options", b"nosniff"))
                if is_page:
                    headers.append((b"content-security-policy", self.CSP))
                    headers.append((b"referrer-policy", b"no-referrer"))
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_headers)
