"""GET /v1/images/{id}: a stored thumbnail, with its content type and cache validators."""

from __future__ import annotations

import hashlib
from typing import Annotated

from fastapi import APIRouter, Depends, Path, Request, Response

from lookalike.api.deps import CatalogDep, SettingsDep, require_read_key
from lookalike.api.routers.search import ERRORS

router = APIRouter(prefix="/v1/images", tags=["images"], dependencies=[Depends(require_read_key)])


def sniff_image_type(data: bytes) -> str:
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    if data.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if data[:6] in (b"GIF87a", b"GIF89a"):
        return "image/gif"
    return "application/octet-stream"


@router.get(
    "/{image_id}",
    responses={
        **ERRORS,
        200: {"content": {"image/webp": {}, "image/png": {}}, "description": "The thumbnail"},
        304: {"description": "Not modified (If-None-Match matched)"},
    },
    response_class=Response,
    summary="A product image's thumbnail",
)
def get_image(
    image_id: Annotated[int, Path(ge=1, le=2**62)],
    request: Request,
    catalog: CatalogDep,
    settings: SettingsDep,
) -> Response:
    """The stored thumbnail (at most 256 px; WEBP, or PNG for tiny images). Cacheable: it sends an
    ETag and answers 304 to a matching If-None-Match."""
    data = catalog.thumbnail(image_id)
    etag = '"' + hashlib.sha256(data).hexdigest()[:32] + '"'
    cache = ("private" if settings.protect_reads else "public") + ", max-age=3600"
    headers = {"ETag": etag, "Cache-Control": cache}
    if etag in [t.strip() for t in request.headers.get("if-none-match", "").split(",")]:
        return Response(status_code=304, headers=headers)
    return Response(data, media_type=sniff_image_type(data), headers=headers)
