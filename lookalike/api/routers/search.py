"""POST /v1/search: find the products that look like an uploaded photo, an image URL or a product."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query, Request

from lookalike.api.deps import ServiceDep, require_read_key
from lookalike.api.inputs import (
    JSON,
    MULTIPART,
    check_filters,
    decode_base64,
    form_image,
    image_request_body,
    media_type,
    parse_filters,
    parse_k,
    raw_image,
    read_form,
    read_image_request,
    read_json,
    require_url,
    unsupported_media,
)
from lookalike.api.schemas import (
    FILTERS_DESCRIPTION,
    MAX_K,
    MAX_RERANK,
    MAX_TAGS_K,
    PRODUCT_ID_PATTERN,
    RERANK_DESCRIPTION,
    AuthenticityRequest,
    AuthenticityResponse,
    ErrorResponse,
    HitPublic,
    ReferencePublic,
    SearchRequest,
    SearchResponse,
    TagPublic,
    TagsRequest,
    TagsResponse,
    image_url,
)
from lookalike.api.service import Service
from lookalike.catalog import Hit
from lookalike.errors import InvalidRequest
from lookalike.images import load_image

router = APIRouter(prefix="/v1", tags=["search"], dependencies=[Depends(require_read_key)])

ERRORS = {
    status: {
        "model": ErrorResponse,
        "description": text,
        "content": {"application/json": {"example": {"error": {"code": code, "message": message}}}},
    }
    for status, text, code, message in [
        (
            400,
            "Broken or unreadable image, refused URL (SSRF guard), malformed form",
            "bad_image",
            "photo.jpg: truncated image file (OSError: image file is truncated)",
        ),
        (401, "API key missing", "missing_api_key", "this endpoint needs the X-API-Key header"),
        (404, "Unknown product or image", "not_found", "product 'sku-123' not found"),
        (
            413,
            "Upload or image too large (bytes or pixels)",
            "too_large",
            "request body of 31457280 bytes is over the 14045525-byte limit",
        ),
        (
            415,
            "Wrong Content-Type, or an image format that is not supported",
            "unsupported_media_type",
            "POST /v1/search takes multipart/form-data or application/json or image/*, not text/plain",
        ),
        (
            422,
            "Invalid parameters (k, filters, ids)",
            "invalid_request",
            "k: Input should be less than or equal to 100",
        ),
        (
            429,
            "Too many searches running or queued",
            "too_many_requests",
            "the server is busy (64 searches running or queued); retry shortly",
        ),
        (
            503,
            "Timed out, or the model/database is unavailable",
            "timeout",
            "the request took longer than 30 s; try again or use a smaller image",
        ),
    ]
}

_MULTIPART_SCHEMA = {
    "type": "object",
    "required": ["image"],
    "properties": {
        "image": {
            "type": "string",
            "format": "binary",
            "description": "The photo (JPEG, PNG, WEBP, GIF, BMP, TIFF).",
        },
        "k": {"type": "integer", "minimum": 1, "maximum": MAX_K, "default": 10},
        "rerank": {"type": "integer", "minimum": 0, "maximum": MAX_RERANK, "default": 0},
        "category": {"type": "string", "description": "Only products of this category."},
        "filter": {"type": "array", "items": {"type": "string"}, "description": "key=value, repeatable."},
    },
}

SEARCH_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            MULTIPART: {"schema": _MULTIPART_SCHEMA},
            JSON: {
                "schema": SearchRequest.model_json_schema(),
                "examples": {
                    "by_url": {
                        "summary": "An image URL",
                        "value": {"image_url": "https://shop.example/boot.jpg", "k": 5},
                    },
                    "by_product": {
                        "summary": "A catalog product",
                        "value": {
                            "product_id": "fmnist-test-0",
                            "k": 10,
                            "filters": {"category": "Ankle boot"},
                        },
                    },
                },
            },
            "image/*": {"schema": {"type": "string", "format": "binary"}},
        },
    }
}


def search_response(query: str, model: str, hits: list[Hit]) -> SearchResponse:
    return SearchResponse(
        query=query,
        model=model,
        results=[HitPublic(**h.to_dict(), thumbnail_url=image_url(h.image_id)) for h in hits],
    )


def _model(service: Service, model: str | None) -> str:
    catalog = service.catalog
    if model is None or model == catalog.model:
        return catalog.model
    if model not in catalog.store.models():  # never load arbitrary model names/paths from a request
        raise InvalidRequest(
            f"the catalog has no vectors for model {model!r}; indexed: "
            f"{', '.join(catalog.store.models()) or 'none'}"
        )
    return model


def search_image(
    service: Service, image: bytes | str, name: str, k: int, filters, model: str | None, rerank: int = 0
) -> SearchResponse:
    """Load (or fetch, SSRF-guarded) the image, embed it and search: runs in an inference thread."""
    catalog = service.catalog
    model = _model(service, model)
    loaded = load_image(image, settings=service.settings, name=name)
    if rerank:
        hits = catalog.search_reranked(
            loaded.image, k=k, filters=filters, model=model, rerank=rerank, verifier=service.settings.verifier
        )
    else:
        vector = catalog.embedder(model).embed_image(loaded.image)
        hits = catalog.search_vector(vector, k=k, filters=filters, model=model)
    return search_response(name, model, hits)


def search_similar(service: Service, product_id: str, k: int, filters, model: str | None) -> SearchResponse:
    model = _model(service, model)
    return search_response(
        product_id, model, service.catalog.similar(product_id, k=k, filters=filters, model=model)
    )


def search_text(service: Service, text: str, k: int, filters) -> SearchResponse:
    """Words -> the image space (the server's text model) -> search: runs in an inference thread."""
    catalog = service.catalog
    tm = catalog.text_model(service.settings.text_model)
    return search_response(
        text, tm.image_model, catalog.search_text(text, k=k, filters=filters, text_model=tm)
    )


def _text_model_or_refuse(service: Service) -> None:
    if not service.settings.text_model:
        raise InvalidRequest(
            "this server has no text model, so it cannot search with words or give tags: start it "
            "with LOOKALIKE_TEXT_MODEL set to a model from `lookalike train text`"
        )


def tag_image(service: Service, image: bytes | str, name: str, k: int) -> TagsResponse:
    """Load (or fetch, SSRF-guarded) the image and tag it: runs in an inference thread."""
    catalog = service.catalog
    tm = catalog.text_model(service.settings.text_model)
    loaded = load_image(image, settings=service.settings, name=name)
    vector = catalog.embedder(tm.image_model).embed_image(loaded.image)
    tags = [TagPublic(**t.to_dict()) for t in tm.tag_vector(vector, k=k)]
    return TagsResponse(query=name, model=tm.image_model, tags=tags)


@router.post(
    "/tags",
    response_model=TagsResponse,
    responses=ERRORS,
    summary="Tags for a photo",
    openapi_extra=image_request_body(TagsRequest, k={"type": "integer"}),
)
async def tags(
    request: Request,
    service: ServiceDep,
    k: Annotated[int | None, Query(ge=1, le=MAX_TAGS_K, description="How many tags (uploads).")] = None,
) -> TagsResponse:
    """The catalog's tags (its categories, frequent attribute values) nearest to a photo, with the
    server's text model (`LOOKALIKE_TEXT_MODEL`). Takes the image as `search` does: a multipart
    `image` field, JSON with `image_url` or `image_base64`, or a raw `image/*` body."""
    _text_model_or_refuse(service)
    limit = service.settings.max_upload_bytes
    image, name, body, form = await read_image_request(request, limit, TagsRequest, "tags")
    if body is not None:
        k = body.k
    elif form is not None:
        k = parse_k(form.get("k"), default=k or 5, max_k=MAX_TAGS_K)
    return await service.inference.run(tag_image, service, image, name, k or 5)


@router.post(
    "/search",
    response_model=SearchResponse,
    responses=ERRORS,
    openapi_extra=SEARCH_BODY,
    summary="Search by photo, image URL or product",
)
async def search(
    request: Request,
    service: ServiceDep,
    k: Annotated[
        int | None, Query(ge=1, le=MAX_K, description="How many products (multipart/raw uploads).")
    ] = None,
    category: Annotated[str | None, Query(max_length=200, description="Only this category.")] = None,
    filter: Annotated[
        list[str] | None, Query(description="key=value, repeatable. " + FILTERS_DESCRIPTION)
    ] = None,
    rerank: Annotated[
        int | None, Query(ge=0, le=MAX_RERANK, description=RERANK_DESCRIPTION + " (multipart/raw uploads)")
    ] = None,
) -> SearchResponse:
    """Find the catalog products that look like a photo.

    - **multipart/form-data**: an `image` file field, plus optional `k`, `category`, `filter` fields;
    - **application/json**: one of `image_url`, `image_base64`, `product_id` or `text` (words, with
      the server's text model), plus `k` and `filters`;
    - **image/\\***: the raw image bytes as the body; `k`, `category`, `filter` in the query string.

    Returns the same document as `lookalike search --json`, with a thumbnail URL per hit.
    """
    limit = service.settings.max_upload_bytes
    kind = media_type(request)
    if kind == JSON:
        body: SearchRequest = await read_json(request, SearchRequest)
        filters = check_filters(body.filters)
        if body.product_id:
            return await service.inference.run(
                search_similar, service, body.product_id, body.k, filters, body.model
            )
        if body.text is not None:
            _text_model_or_refuse(service)
            return await service.inference.run(search_text, service, body.text, body.k, filters)
        if body.image_url:
            url = require_url(body.image_url, "image_url")
            return await service.inference.run(
                search_image, service, url, url, body.k, filters, body.model, body.rerank
            )
        data = decode_base64(body.image_base64, item="image_base64", limit=limit)
        return await service.inference.run(
            search_image, service, data, "image_base64", body.k, filters, body.model, body.rerank
        )
    if kind == MULTIPART:
        form = await read_form(request, max_files=1)
        data, name = await form_image(form, limit, "search")
        form_k = parse_k(form.get("k"), default=k or 10, max_k=MAX_K)
        form_rerank = parse_k(form.get("rerank"), default=rerank or 0, max_k=MAX_RERANK, name="rerank", low=0)
        filters = parse_filters(form.get("category") or category, form.getlist("filter") or filter)
        return await service.inference.run(
            search_image, service, data, name, form_k, filters, None, form_rerank
        )
    if kind.startswith("image/"):
        data = await raw_image(request, limit)
        return await service.inference.run(
            search_image, service, data, "upload", k or 10, parse_filters(category, filter), None, rerank or 0
        )
    raise unsupported_media(request, [MULTIPART, JSON, "image/*"])


def authenticate_image(
    service: Service, product_id: str, image: bytes | str, name: str, rerank: int, window: int
) -> AuthenticityResponse:
    """Load (or fetch, SSRF-guarded) the photo and check it against the product: inference thread."""
    catalog = service.catalog
    catalog.get_product(product_id)  # a 404 before the image is fetched or decoded
    loaded = load_image(image, settings=service.settings, name=name)
    check = catalog.check_authenticity(
        product_id, loaded.image, rerank=rerank, window=window, verifier=service.settings.verifier
    )
    doc = check.to_dict()
    doc["references"] = [
        ReferencePublic(**r, thumbnail_url=image_url(r["image_id"])) for r in doc["references"]
    ]
    return AuthenticityResponse(query=name, model=catalog.model, **doc)


@router.post(
    "/products/{product_id}/authenticity",
    response_model=AuthenticityResponse,
    responses=ERRORS,
    summary="Does a photo show this product?",
    tags=["products"],
    openapi_extra=image_request_body(
        AuthenticityRequest, rerank={"type": "integer"}, window={"type": "integer"}
    ),
)
async def authenticity(
    request: Request,
    service: ServiceDep,
    product_id: Annotated[
        str, Path(pattern=PRODUCT_ID_PATTERN, description="The product the photo is said to show.")
    ],
    rerank: Annotated[
        int | None, Query(ge=0, le=MAX_RERANK, description="(uploads) see the JSON field.")
    ] = None,
    window: Annotated[int | None, Query(ge=1, le=MAX_K, description="(uploads) see the JSON field.")] = None,
) -> AuthenticityResponse:
    """Check a photo (a seller's listing, a customer's claim) against the product's reference
    photos and the whole catalog. The verdict: `copy` (the photo is one of the product's own
    reference photos, re-encoded), `match` (no catalog product looks more like it), `lookalike`
    (others look more like it; the best is named) or `different`. Takes the image as `search`
    does: a multipart `image` field, JSON with `image_url` or `image_base64`, or a raw `image/*`
    body."""
    limit = service.settings.max_upload_bytes
    image, name, body, form = await read_image_request(request, limit, AuthenticityRequest, "authenticity")
    if body is not None:
        rerank, window = body.rerank, body.window
    elif form is not None:
        rerank = parse_k(form.get("rerank"), default=rerank or 0, max_k=MAX_RERANK, name="rerank", low=0)
        window = parse_k(form.get("window"), default=window or 100, max_k=MAX_K, name="window")
    return await service.inference.run(
        authenticate_image, service, product_id, image, name, rerank or 0, window or 100
    )
