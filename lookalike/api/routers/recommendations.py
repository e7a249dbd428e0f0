"""POST /v1/recommendations: products that look like what a shopper liked (lookalike.recommend)."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request

from lookalike.api.deps import ServiceDep, require_read_key
from lookalike.api.inputs import JSON, check_filters, media_type, read_json, unsupported_media
from lookalike.api.routers.search import ERRORS, search_response
from lookalike.api.schemas import RecommendRequest, SearchResponse
from lookalike.api.service import Service

router = APIRouter(prefix="/v1", tags=["search"], dependencies=[Depends(require_read_key)])


def recommend(service: Service, body: RecommendRequest, filters) -> SearchResponse:
    """Runs in an inference thread: the products' vectors come from the store, no image is loaded."""
    catalog = service.catalog
    hits = catalog.recommend(
        body.liked,
        k=body.k,
        disliked=body.disliked,
        exclude=body.exclude,
        filters=filters,
        method=body.method,
        diversity=body.diversity,
    )
    return search_response("liked: " + ", ".join(dict.fromkeys(body.liked)), catalog.model, hits)


@router.post(
    "/recommendations",
    response_model=SearchResponse,
    responses=ERRORS,
    summary="Recommend products from liked (and disliked) ones",
    openapi_extra={
        "requestBody": {"required": True, "content": {JSON: {"schema": RecommendRequest.model_json_schema()}}}
    },
)
async def recommendations(request: Request, service: ServiceDep) -> SearchResponse:
    """The products that look most like the `liked` ones (a wishlist, a cart, the pages a shopper
    dwelt on) and least like the `disliked` ones; none of those, nor `exclude`, is returned. An
    unknown liked or disliked id is a 404 that names it. Each result's `score` is the
    recommendation score for the chosen `method` (higher first), not a cosine similarity."""
    if media_type(request) != JSON:
        raise unsupported_media(request, [JSON])
    body: RecommendRequest = await read_json(request, RecommendRequest)
    filters = check_filters(body.filters)
    return await service.inference.run(recommend, service, body, filters)
