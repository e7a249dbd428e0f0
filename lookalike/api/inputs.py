"""Reading request bodies: content-type dispatch, uploads with a size limit, base64, filters."""

from __future__ import annotations

import base64
import binascii
import json
import re
from typing import TypeVar

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ValidationError
from starlette.datastructures import FormData, UploadFile

from lookalike.api.errors import APIError
from lookalike.api.schemas import MAX_FILTERS
from lookalike.errors import ImageError, InvalidRequest, TooLargeError, URLNotAllowedError
from lookalike.store.base import ATTRIBUTE_KEY, ATTRIBUTE_KEY_RULE

M = TypeVar("M", bound=BaseModel)
JSON = "application/json"
MULTIPART = "multipart/form-data"
_ASCII_INT = re.compile(r"^[+-]?[0-9]+$")


def media_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";")[0].strip().lower()


def unsupported_media(request: Request, allowed: list[str]) -> APIError:
    got = media_type(request) or "no Content-Type"
    return APIError(
        415,
        "unsupported_media_type",
        f"{request.method} {request.url.path} takes {' or '.join(allowed)}, not {got}",
    )


async def read_json(request: Request, model: type[BaseModel]) -> BaseModel:
    body = await request.body()
    try:
        return model.model_validate_json(body)
    except ValidationError as exc:
        raise RequestValidationError(exc.errors(include_url=False, include_context=False)) from None


def validate_model(model: type[M], data: dict) -> M:
    """``data`` (e.g. multipart form fields) checked against ``model``; errors read as a JSON body's."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise RequestValidationError(exc.errors(include_url=False, include_context=False)) from None


async def read_form(request: Request, *, max_files: int) -> FormData:
    try:
        return await request.form(max_files=max_files, max_fields=40)
    except APIError:
        raise
    except Exception as exc:  # malformed multipart, too many parts
        raise APIError(400, "bad_request", f"cannot read the multipart form ({exc})") from None


async def read_upload(upload: UploadFile, limit: int) -> bytes:
    """The uploaded file's bytes, refused as soon as more than ``limit`` bytes have been read."""
    name = upload.filename or "upload"
    if upload.size is not None and upload.size > limit:
        raise TooLargeError(name, f"upload is {upload.size} bytes, limit is {limit}", kind="too_large")
    chunks, total = [], 0
    while chunk := await upload.read(1 << 20):
        total += len(chunk)
        if total > limit:
            raise TooLargeError(name, f"upload is over the {limit}-byte limit", kind="too_large")
        chunks.append(chunk)
    return b"".join(chunks)


async def form_image(form: FormData, limit: int, what: str) -> tuple[bytes, str]:
    """The bytes and file name of a multipart form's ``image`` file (``what``: the endpoint, for
    the error when there is none)."""
    upload = form.get("image")
    if upload is None or isinstance(upload, str):
        raise InvalidRequest(f"multipart {what} needs a file field named 'image'")
    return await read_upload(upload, limit), upload.filename or "upload"


async def raw_image(request: Request, limit: int) -> bytes:
    """An ``image/*`` request's body: the image itself, at most ``limit`` bytes."""
    data = await request.body()
    if len(data) > limit:
        raise TooLargeError("upload", f"upload is {len(data)} bytes, limit is {limit}", kind="too_large")
    return data


def decode_base64(text: str, *, item: str, limit: int) -> bytes:
    if text.startswith("data:"):  # a data: URL pasted as is
        text = text.partition(",")[2]
    if len(text) > limit * 4 // 3 + 8:
        raise TooLargeError(item, f"image is over the {limit}-byte limit", kind="too_large")
    try:
        data = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise ImageError(item, "not valid base64", kind="invalid") from None
    if len(data) > limit:
        raise TooLargeError(item, f"image is {len(data)} bytes, limit is {limit}", kind="too_large")
    return data


_HTTP_URL = re.compile(r"^https?://", re.IGNORECASE)
_ANY_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]*:")


def require_url(value: str, field: str) -> str:
    """An image URL from a request: http(s) only, and never a server-side file path."""
    value = value.strip()
    if _HTTP_URL.match(value):
        return value
    if _ANY_SCHEME.match(value) and not re.match(r"^[A-Za-z]:[\\/]", value):  # not a Windows path
        raise URLNotAllowedError(value, "only http and https URLs are allowed", kind="ssrf")
    raise InvalidRequest(f"{field} must be an http:// or https:// URL, got {value[:100]!r}")


def check_filters(filters: dict[str, str] | None) -> dict[str, str] | None:
    if not filters:
        return None
    if len(filters) > MAX_FILTERS:
        raise InvalidRequest(f"at most {MAX_FILTERS} filters, got {len(filters)}")
    for key in filters:
        if key != "category" and not ATTRIBUTE_KEY.fullmatch(key):
            raise InvalidRequest(f"invalid filter key {key[:80]!r} ({ATTRIBUTE_KEY_RULE})")
    return filters


def parse_filters(category: str | None, items: list[str] | None) -> dict[str, str] | None:
    """Filters from ``category=`` and repeated ``filter=key=value`` (query string or form)."""
    out: dict[str, str] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise InvalidRequest(f"filter {item!r} is not key=value")
        out[key.strip()] = value.strip()
    if category:
        out["category"] = category
    return check_filters(out)


def parse_k(
    value: str | int | None, default: int = 10, max_k: int = 100, *, name: str = "k", low: int = 1
) -> int:
    """A form field holding a count (``k``, ``rerank``): an integer in ``low..max_k``."""
    if value is None or value == "":
        return default
    if isinstance(value, bool) or (isinstance(value, str) and not _ASCII_INT.match(value.strip())):
        raise InvalidRequest(f"{name} must be an integer, got {value!r}")  # not True, not "٣"
    try:
        k = int(value)
    except (TypeError, ValueError):
        raise InvalidRequest(f"{name} must be an integer, got {value!r}") from None
    if not low <= k <= max_k:
        raise InvalidRequest(f"{name} must be between {low} and {max_k}, got {k}")
    return k


def form_json_object(form: FormData, name: str) -> dict:
    raw = form.get(name)
    if raw is None or raw == "":
        return {}
    if not isinstance(raw, str):
        raise InvalidRequest(f"form field {name!r} must be text (a JSON object)")
    try:
        value = json.loads(raw)  # NaN and Infinity parse here; ProductFields refuses them by name
    except json.JSONDecodeError as exc:
        raise InvalidRequest(f"form field {name!r} is not valid JSON ({exc.msg})") from None
    if not isinstance(value, dict):
        raise InvalidRequest(f"form field {name!r} must be a JSON object")
    for key, item in value.items():
        if not isinstance(item, str | int | float | bool):
            raise InvalidRequest(f"form field {name!r}: value of {key!r} must be a string, number or boolean")
    return value


def image_request_body(json_model: type[BaseModel], **form_fields: dict) -> dict:
    """OpenAPI ``requestBody`` of an endpoint that takes one image as search does: JSON
    (``json_model``: ``image_url`` or ``image_base64``), multipart (an ``image`` file plus
    ``form_fields``) or a raw ``image/*`` body."""
    form = {"image": {"type": "string", "format": "binary"}, **form_fields}
    return {
        "requestBody": {
            "required": True,
            "content": {
                JSON: {"schema": json_model.model_json_schema()},
                MULTIPART: {"schema": {"type": "object", "properties": form, "required": ["image"]}},
                "image/*": {"schema": {"type": "string", "format": "binary"}},
            },
        }
    }


async def read_image_request(
    request: Request, limit: int, json_model: type[M], what: str
) -> tuple[bytes | str, str, M | None, FormData | None]:
    """The image of a request that takes one as search does, checked: ``(bytes or a checked
    http(s) URL, its name, the JSON body or None, the form or None)``. JSON names the image with
    ``image_url`` or ``image_base64``; multipart with an ``image`` file field; ``image/*`` is the
    image itself. ``what`` (the endpoint) names it in errors."""
    kind = media_type(request)
    if kind == JSON:
        body = await read_json(request, json_model)
        if body.image_url:
            url = require_url(body.image_url, "image_url")
            return url, url, body, None
        return decode_base64(body.image_base64, item="image_base64", limit=limit), "image_base64", body, None
    if kind == MULTIPART:
        form = await read_form(request, max_files=1)
        data, name = await form_image(form, limit, what)
        return data, name, None, form
    if kind.startswith("image/"):
        return await raw_image(request, limit), "upload", None, None
    raise unsupported_media(request, [MULTIPART, JSON, "image/*"])
