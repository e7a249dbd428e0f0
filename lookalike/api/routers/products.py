"""Products: list them, read one, find similar ones, create/replace one (embedded synchronously),
delete one."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query, Request, Response

from lookalike.api.deps import CatalogDep, ServiceDep, WriteKeyDep, require_read_key
from lookalike.api.errors import APIError
from lookalike.api.inputs import (
    JSON,
    MULTIPART,
    decode_base64,
    form_json_object,
    media_type,
    parse_filters,
    read_form,
    read_json,
    read_upload,
    require_url,
    unsupported_media,
    validate_model,
)
from lookalike.api.routers.search import ERRORS, search_similar
from lookalike.api.schemas import (
    FILTERS_DESCRIPTION,
    MAX_IMAGES_PER_PRODUCT,
    MAX_K,
    MAX_PAGE,
    PRODUCT_ID_PATTERN,
    ProductFields,
    ProductPublic,
    ProductsPublic,
    ProductUpsert,
    SearchResponse,
)
from lookalike.api.service import Service
from lookalike.catalog import IndexReport
from lookalike.errors import InvalidRequest
from lookalike.sources import SourceProduct

router = APIRouter(prefix="/v1/products", tags=["products"], dependencies=[Depends(require_read_key)])

ProductId = Annotated[
    str, Path(pattern=PRODUCT_ID_PATTERN, description="The product id.", examples=["fmnist-test-0"])
]

#: image failure kind -> (HTTP status, error code) for a PUT whose image could not be used
_FAILURE = {
    "too_large": (413, "too_large"),
    "too_many_pixels": (413, "too_large"),
    "unsupported_format": (415, "unsupported_format"),
    "ssrf": (400, "url_not_allowed"),
    "fetch_failed": (400, "fetch_failed"),
    "timeout": (400, "fetch_failed"),
    "http_status": (400, "fetch_failed"),
    "not_image_content": (400, "fetch_failed"),
}


@router.get("", response_model=ProductsPublic, responses=ERRORS, summary="List products")
def list_products(
    catalog: CatalogDep,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE, description="Products per page.")] = 50,
    cursor: Annotated[
        str | None,
        Query(max_length=200, description="The `next_cursor` of the previous page (none: the first page)."),
    ] = None,
    category: Annotated[
        str | None, Query(max_length=200, description="Only products of this category.")
    ] = None,
) -> ProductsPublic:
    """The catalog's products in the order they were added, a page at a time. Paging is keyset-based:
    a deep page is as fast as the first, and products added while you page appear on a later page."""
    page = catalog.list_products(limit, cursor=cursor or None, category=category or None)
    data = [ProductPublic.from_record(p) for p in page.products]
    return ProductsPublic(data=data, count=len(data), next_cursor=page.next_cursor)


@router.get("/{product_id}", response_model=ProductPublic, responses=ERRORS, summary="Get a product")
def get_product(product_id: ProductId, catalog: CatalogDep) -> ProductPublic:
    return ProductPublic.from_record(catalog.get_product(product_id))


@router.get(
    "/{product_id}/similar",
    response_model=SearchResponse,
    responses=ERRORS,
    summary="Products that look like a product",
)
async def similar(
    product_id: ProductId,
    service: ServiceDep,
    k: Annotated[int, Query(ge=1, le=MAX_K)] = 10,
    category: Annotated[str | None, Query(max_length=200)] = None,
    filter: Annotated[
        list[str] | None, Query(description="key=value, repeatable. " + FILTERS_DESCRIPTION)
    ] = None,
) -> SearchResponse:
    """The products that look most like `product_id` (itself excluded)."""
    filters = parse_filters(category, filter)
    return await service.inference.run(search_similar, service, product_id, k, filters, None)


async def _read_upsert(request: Request, product_id: str, limit: int) -> SourceProduct:
    kind = media_type(request)
    if kind == JSON:
        body: ProductUpsert = await read_json(request, ProductUpsert)
        images: list = [require_url(u, f"image_urls[{i}]") for i, u in enumerate(body.image_urls)]
        uris = list(images)
        for i, text in enumerate(body.images_base64):
            images.append(decode_base64(text, item=f"images_base64[{i}]", limit=limit))
            uris.append(f"{product_id}:images_base64[{i}]")
        return SourceProduct(
            product_id,
            images,
            title=body.title,
            category=body.category,
            attributes=dict(body.attributes),
            url=body.url,
            image_uris=uris,
        )
    if kind == MULTIPART:
        form = await read_form(request, max_files=MAX_IMAGES_PER_PRODUCT)
        images, uris = [], []
        for url in form.getlist("image_url"):
            if isinstance(url, str) and url.strip():
                images.append(require_url(url, "image_url"))
                uris.append(images[-1])
        for upload in form.getlist("images"):
            if isinstance(upload, str):
                raise InvalidRequest("form field 'images' must be a file")
            images.append(await read_upload(upload, limit))
            uris.append(upload.filename or f"{product_id}:upload")
        if not images:
            raise InvalidRequest("give at least one image: 'images' file fields or 'image_url' fields")
        if len(images) > MAX_IMAGES_PER_PRODUCT:
            raise InvalidRequest(f"at most {MAX_IMAGES_PER_PRODUCT} images per product, got {len(images)}")
        texts = {name: form.get(name) for name in ("title", "category", "url")}
        for name, value in texts.items():
            if value is not None and not isinstance(value, str):
                raise InvalidRequest(f"form field {name!r} must be text")
        # the same limits as a JSON body: lengths, attribute keys and values, the url's scheme
        fields = validate_model(
            ProductFields,
            {
                **{name: value or None for name, value in texts.items()},
                "attributes": form_json_object(form, "attributes"),
            },
        )
        return SourceProduct(
            product_id,
            images,
            title=fields.title,
            category=fields.category,
            attributes=dict(fields.attributes),
            url=fields.url,
            image_uris=uris,
        )
    raise unsupported_media(request, [JSON, MULTIPART])


def _index(service: Service, product: SourceProduct) -> IndexReport:
    return service.catalog.index_products([product], replace_images=True)


@router.put(
    "/{product_id}",
    response_model=ProductPublic,
    responses={
        **ERRORS,
        201: {"model": ProductPublic, "description": "Created"},
        403: {"model": ERRORS[401]["model"], "description": "Wrong API key"},
    },
    summary="Create or replace a product",
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                JSON: {"schema": ProductUpsert.model_json_schema()},
                MULTIPART: {
                    "schema": {
                        "type": "object",
                        "properties": {
                            "images": {"type": "array", "items": {"type": "string", "format": "binary"}},
                            "image_url": {"type": "array", "items": {"type": "string"}},
                            "title": {"type": "string"},
                            "category": {"type": "string"},
                            "url": {"type": "string"},
                            "attributes": {"type": "string", "description": "A JSON object"},
                        },
                    }
                },
            },
        }
    },
)
async def put_product(
    product_id: ProductId, request: Request, response: Response, service: ServiceDep, _: WriteKeyDep
) -> ProductPublic:
    """Create the product, or replace its images (given fields replace stored ones; attributes merge).

    The images are fetched (public http(s) URLs only) or decoded and embedded before this answers;
    if any image cannot be used nothing changes and the error names it. Writes to one product
    are applied one at a time. Answers 201 when the product is new, 200 when it was updated."""
    product = await _read_upsert(request, product_id, service.settings.max_upload_bytes)
    async with service.product_locks.hold(product_id) as held:
        report = await service.inference.run(_index, service, product, holding=held)
        if report.products_failed or not report.products_indexed:
            failure = (
                report.failures[0]
                if report.failures
                else {"item": product_id, "kind": "invalid", "reason": "product could not be indexed"}
            )
            status, code = _FAILURE.get(failure["kind"], (400, "bad_image"))
            raise APIError(status, code, f"{failure['item']}: {failure['reason']}")
        record = service.catalog.get_product(product_id)
    response.status_code = 201 if report.products_created else 200
    return ProductPublic.from_record(record)


@router.delete("/{product_id}", status_code=204, responses=ERRORS, summary="Delete a product")
async def delete_product(product_id: ProductId, service: ServiceDep, _: WriteKeyDep) -> Response:
    """Delete the product; its images go too unless another product uses them."""
    async with service.product_locks.hold(product_id) as held:
        await service.inference.run(service.catalog.delete, product_id, holding=held)
    return Response(status_code=204)
