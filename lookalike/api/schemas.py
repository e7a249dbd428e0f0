"""Request and response bodies, in families: Product*, Search*, Hit*, Stats, Health, Error."""

from __future__ import annotations

import math
import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_serializer, model_validator

from lookalike.store.base import ATTRIBUTE_KEY, ATTRIBUTE_KEY_RULE

#: product ids: 1-128 letters/digits (any script), space and . _ : @ + = ~ - ( ) [ ] # & , ' %
#: (what file names hold: "photo (1)", "sac#2"); no slash, backslash, double quote, ! < > or control
#: characters; starting with a letter or digit, not ending with a space ("sku1 " is no second "sku1")
PRODUCT_ID_PATTERN = r"^\w(?:[\w.:@+=~ ()\[\]#&,'%-]{0,126}[\w.:@+=~()\[\]#&,'%-])?$"
MAX_K = 100
MAX_IMAGES_PER_PRODUCT = 10
MAX_FILTERS = 8
MAX_RERANK = 500  # products a search may verify (alignment screens 3x as many; lookalike.rerank)
MAX_PAGE = 500  # products per page of GET /v1/products

RERANK_DESCRIPTION = (
    "Re-rank against the photo (0: off): alignment screens the first 3N products and the learned "
    "verifier checks the best N of them. With the default model, N=300 finds the exact product "
    "first about 4x as often in customer photos and makes a search about 16x slower: 260 ms "
    "instead of 17 ms on 2 cores (N=100: 136 ms; BENCHMARKS.md)."
)
FILTERS_DESCRIPTION = (
    "Only products whose `category` or attribute equals the value, e.g. "
    '`{"category": "Bag"}` or `{"split": "test"}`.'
)


def image_url(image_id: int) -> str:
    return f"/v1/images/{image_id}"


# --- errors ------------------------------------------------------------------------------------
class ErrorDetail(BaseModel):
    code: str = Field(examples=["bad_image"])
    message: str = Field(examples=["upload.png: not an image (unrecognised content)"])


class ErrorResponse(BaseModel):
    """Every error: ``{"error": {"code", "message"}}``."""

    error: ErrorDetail


# --- search ------------------------------------------------------------------------------------
class HitPublic(BaseModel):
    product_id: str
    score: float = Field(description="Cosine similarity, 1.0 = identical.")
    image_id: int = Field(description="The product image that matched best.")
    title: str | None = None
    category: str | None = None
    thumbnail_url: str = Field(description="Relative URL of the matched image's thumbnail.")
    alignment: float | None = Field(
        None,
        description="With `rerank`: how well the image aligns with the photo (0..1), for the products "
        "alignment screened. Absent otherwise.",
    )
    verifier: float | None = Field(
        None,
        description="With `rerank`: the learned verifier's match score for the photo and this image "
        "(a logit: higher = more likely the same product), for the N products it checked; they come "
        "first, ordered by score + alignment + 0.05 × verifier. Absent otherwise.",
    )

    @model_serializer(mode="wrap")
    def _drop_unset_rerank_scores(self, handler):
        data = handler(self)
        for key in ("alignment", "verifier"):
            if data.get(key) is None:
                data.pop(key, None)
        return data


class SearchResponse(BaseModel):
    """The same document as ``lookalike search --json``, plus a thumbnail URL per hit."""

    query: str
    model: str
    results: list[HitPublic]

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "query": "street-photo.jpg",
                    "model": "default",
                    "results": [
                        {
                            "product_id": "fmnist-test-0",
                            "score": 0.93,
                            "image_id": 60001,
                            "title": "Ankle boot #0 (test)",
                            "category": "Ankle boot",
                            "thumbnail_url": "/v1/images/60001",
                        }
                    ],
                }
            ]
        }
    )


class SearchRequest(BaseModel):
    """Search with exactly one of ``image_url``, ``image_base64``, ``product_id`` or ``text``."""

    image_url: str | None = Field(
        None, max_length=4096, description="An http(s) image URL (public hosts only)."
    )
    image_base64: str | None = Field(None, description="Image file bytes, base64-encoded.")
    product_id: str | None = Field(
        None, pattern=PRODUCT_ID_PATTERN, description="Find products that look like this catalog product."
    )
    text: str | None = Field(
        None,
        min_length=1,
        max_length=500,
        description='Words to search with ("ankle boots"); needs a text model on the server '
        "(LOOKALIKE_TEXT_MODEL, from `lookalike train text`).",
    )
    k: int = Field(10, ge=1, le=MAX_K, description="How many products to return.")
    rerank: int = Field(0, ge=0, le=MAX_RERANK, description=RERANK_DESCRIPTION)
    filters: dict[str, str] | None = Field(None, max_length=MAX_FILTERS, description=FILTERS_DESCRIPTION)
    model: str | None = Field(
        None, max_length=200, description="One of the models the catalog was indexed with (default: its own)."
    )

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "image_url": "https://shop.example/photos/boot.jpg",
                    "k": 5,
                    "filters": {"category": "Ankle boot"},
                },
                {"product_id": "fmnist-test-0", "k": 10},
                {"text": "ankle boots", "k": 10},
            ]
        },
    )

    @model_validator(mode="after")
    def _exactly_one_query(self) -> SearchRequest:
        given = [n for n in ("image_url", "image_base64", "product_id", "text") if getattr(self, n)]
        if len(given) != 1:
            raise ValueError(
                "give exactly one of image_url, image_base64, product_id or text"
                + (f" (got {', '.join(given)})" if given else "")
            )
        if self.rerank and self.product_id:
            raise ValueError("rerank checks a photo; a product_id search has none (leave rerank at 0)")
        if self.text is not None:
            if not self.text.strip():
                raise ValueError("text is blank: give some words to search with")
            if not any(ch.isalnum() for ch in self.text):
                raise ValueError("text has no words (no letter or digit): give some words to search with")
            if self.rerank:
                raise ValueError("rerank checks a photo; a text search has none (leave rerank at 0)")
            if self.model:
                raise ValueError("a text search uses the text model's image model: leave model out")
        return self


# --- authenticity ------------------------------------------------------------------------------
class AuthenticityRequest(BaseModel):
    """Check a photo, given as exactly one of ``image_url`` or ``image_base64``, against a product."""

    image_url: str | None = Field(
        None, max_length=4096, description="An http(s) image URL (public hosts only)."
    )
    image_base64: str | None = Field(None, description="Image file bytes, base64-encoded.")
    rerank: int = Field(
        0,
        ge=0,
        le=MAX_RERANK,
        description="Rank with alignment and the learned verifier over this many products (0: the "
        "embedding alone); for customer photos 100-300 finds the product first far more often.",
    )
    window: int = Field(
        100, ge=1, le=MAX_K, description="Products looked at before the verdict is `different`."
    )

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"image_url": "https://shop.example/claim.jpg", "rerank": 100}]},
    )

    @model_validator(mode="after")
    def _exactly_one_image(self) -> AuthenticityRequest:
        given = [n for n in ("image_url", "image_base64") if getattr(self, n)]
        if len(given) != 1:
            raise ValueError("give exactly one of image_url or image_base64")
        return self


class ReferencePublic(BaseModel):
    image_id: int
    score: float = Field(description="Cosine similarity between the photo and this reference photo.")
    hash_distance: int = Field(description="Perceptual-hash distance in bits (0 = the same picture).")
    thumbnail_url: str


class AuthenticityResponse(BaseModel):
    """The verdict on whether a photo shows a product (`lookalike authenticate --json`)."""

    query: str
    model: str
    product_id: str
    verdict: Literal["copy", "match", "lookalike", "different"] = Field(
        description="copy: a copy of one of the product's reference photos; match: no catalog product "
        "looks more like the photo; lookalike: it is in the first `window` but others look more "
        "alike; different: it is not."
    )
    reason: str
    rank: int | None = Field(description="The product's place among all products for the photo (1 = best).")
    score: float = Field(description="Cosine similarity to the product's best reference photo.")
    best_other: dict[str, Any] | None = Field(
        description="The product the photo looks most like, other than this one."
    )
    references: list[ReferencePublic]
    rerank: int
    verifier: float | None = None
    copy_of: int | None = None


# --- recommendations ---------------------------------------------------------------------------
#: liked or disliked products in one request: each liked one is a search of its own (the library
#: takes up to 100); excluded ones cost nothing but a lookup
MAX_LIKED = 20
MAX_EXCLUDE = 100

ProductIdItem = Annotated[str, Field(pattern=PRODUCT_ID_PATTERN)]


class RecommendRequest(BaseModel):
    """Products that look like ``liked`` and unlike ``disliked`` (none of them, nor ``exclude``)."""

    liked: list[ProductIdItem] = Field(
        min_length=1, max_length=MAX_LIKED, description="The products the shopper liked (a wishlist, a cart)."
    )
    disliked: list[ProductIdItem] = Field(
        [], max_length=MAX_LIKED, description='Products to steer away from ("not like this").'
    )
    exclude: list[ProductIdItem] = Field(
        [],
        max_length=MAX_EXCLUDE,
        description="Products never to recommend (bought already); unknown ids are fine.",
    )
    k: int = Field(10, ge=1, le=MAX_K, description="How many products to return.")
    filters: dict[str, str] | None = Field(None, max_length=MAX_FILTERS, description=FILTERS_DESCRIPTION)
    method: Literal["balanced", "nearest", "centroid"] = Field(
        "balanced",
        description="balanced: similarity to the nearest liked product, measured against that "
        "product's own neighbourhood, so every liked product gets its share; nearest: plain "
        "similarity to the nearest liked product; centroid: to their mean.",
    )
    diversity: float = Field(
        0.0,
        ge=0.0,
        le=1.0,
        description="0: the most alike first; up to 1: fewer near-copies of each other (the list is "
        "then ordered for variety, so scores are not in order).",
    )

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {"liked": ["fmnist-test-0", "fmnist-test-1"], "k": 10},
                {"liked": ["fmnist-test-9"], "disliked": ["fmnist-test-12"], "diversity": 0.3},
            ]
        },
    )


# --- tags --------------------------------------------------------------------------------------
MAX_TAGS_K = 50


class TagsRequest(BaseModel):
    """Tags for a photo given as exactly one of ``image_url`` or ``image_base64``."""

    image_url: str | None = Field(
        None, max_length=4096, description="An http(s) image URL (public hosts only)."
    )
    image_base64: str | None = Field(None, description="Image file bytes, base64-encoded.")
    k: int = Field(5, ge=1, le=MAX_TAGS_K, description="How many tags to return.")

    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"image_url": "https://shop.example/boot.jpg"}]}
    )

    @model_validator(mode="after")
    def _exactly_one_image(self) -> TagsRequest:
        given = [n for n in ("image_url", "image_base64") if getattr(self, n)]
        if len(given) != 1:
            raise ValueError("give exactly one of image_url or image_base64")
        return self


class TagPublic(BaseModel):
    tag: str
    kind: str = Field(description='"category", or the attribute the value belongs to.')
    score: float = Field(description="Cosine similarity between the photo and the tag's words.")


class TagsResponse(BaseModel):
    """The catalog's tags nearest to a photo, best first (``lookalike tag --json``)."""

    query: str
    model: str
    tags: list[TagPublic]

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "query": "photo.jpg",
                    "model": "default",
                    "tags": [
                        {"tag": "Ankle boot", "kind": "category", "score": 0.59},
                        {"tag": "Sneaker", "kind": "category", "score": 0.26},
                    ],
                }
            ]
        }
    )


# --- products ----------------------------------------------------------------------------------
class ProductPublic(BaseModel):
    product_id: str
    title: str | None = None
    category: str | None = None
    attributes: dict[str, Any] = {}
    url: str | None = None
    created_at: str | None = None
    updated_at: str | None = None
    image_ids: list[int] = []
    thumbnail_urls: list[str] = []

    @classmethod
    def from_record(cls, record) -> ProductPublic:
        return cls(**record.to_dict(), thumbnail_urls=[image_url(i) for i in record.image_ids])


class ProductsPublic(BaseModel):
    """One page of ``GET /v1/products``: pass ``next_cursor`` as ``cursor`` for the next page."""

    data: list[ProductPublic]
    count: int = Field(description="How many products this page holds (at most `limit`).")
    next_cursor: str | None = Field(
        description="The cursor of the next page; null on the last page.", examples=["YWZ0ZXI6NTA"]
    )


#: attribute values are short scalars; keys as filters take them (lookalike.store.base.ATTRIBUTE_KEY)
MAX_ATTRIBUTES = 50
MAX_ATTRIBUTE_TEXT = 1000


class ProductFields(BaseModel):
    """A product's descriptive fields, as a JSON body or multipart form fields give them."""

    title: str | None = Field(None, max_length=500)
    category: str | None = Field(None, max_length=200)
    attributes: dict[str, str | int | float | bool] = Field(
        default_factory=dict,
        max_length=MAX_ATTRIBUTES,
        description="Scalar attributes (string, finite number or boolean) under keys a filter can name: "
        + ATTRIBUTE_KEY_RULE
        + ".",
    )
    url: str | None = Field(
        None,
        max_length=4096,
        description="The product page: an http(s) URL or a path on the shop's site (stored, never fetched).",
    )

    @field_validator("attributes", mode="before")
    @classmethod
    def _scalar_attributes(cls, value: Any) -> Any:
        if not isinstance(value, dict):
            return value  # the type check names it
        for key, item in value.items():
            if not isinstance(key, str) or not ATTRIBUTE_KEY.fullmatch(key):
                raise ValueError(f"attribute key {str(key)[:80]!r}: {ATTRIBUTE_KEY_RULE}")
            if isinstance(item, float) and not math.isfinite(item):
                raise ValueError(f"attribute {key!r} must be a finite number, got {item}")
            if isinstance(item, str) and len(item) > MAX_ATTRIBUTE_TEXT:
                raise ValueError(
                    f"attribute {key!r} is {len(item)} characters, limit is {MAX_ATTRIBUTE_TEXT}"
                )
            if not isinstance(item, str | int | float | bool):
                raise ValueError(f"attribute {key!r} must be a string, number or boolean")
        return value

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        scheme = re.match(r"^\s*([A-Za-z][A-Za-z0-9+.-]*):", value or "")
        if scheme and scheme.group(1).lower() not in ("http", "https"):  # javascript:, data:, ...
            raise ValueError(f"must be an http(s) URL or a path (/p/123), got {value[:100]!r}")
        return value


class ProductUpsert(ProductFields):
    """Create a product or replace its images. Given fields replace stored ones; attributes merge."""

    image_urls: list[str] = Field(
        default_factory=list,
        max_length=MAX_IMAGES_PER_PRODUCT,
        description="http(s) image URLs (public hosts only).",
    )
    images_base64: list[str] = Field(
        default_factory=list, max_length=MAX_IMAGES_PER_PRODUCT, description="Image files, base64-encoded."
    )

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "title": "Leather ankle boot",
                    "category": "Ankle boot",
                    "attributes": {"brand": "Acme"},
                    "image_urls": ["https://shop.example/photos/boot-front.jpg"],
                }
            ]
        },
    )

    @model_validator(mode="after")
    def _has_images(self) -> ProductUpsert:
        n = len(self.image_urls) + len(self.images_base64)
        if n == 0:
            raise ValueError("give at least one image (image_urls or images_base64)")
        if n > MAX_IMAGES_PER_PRODUCT:
            raise ValueError(f"at most {MAX_IMAGES_PER_PRODUCT} images per product, got {n}")
        return self


# --- system ------------------------------------------------------------------------------------
class StatsPublic(BaseModel):
    db: str = Field(description="The database: its URL without credentials, or the SQLite file's name.")
    schema_version: int
    model: str | None
    products: int
    images: int
    links: int
    embeddings: int
    models: dict[str, int]
    categories: dict[str, int]
    text_search: bool = Field(
        False, description="Whether `POST /v1/search` takes `text` here (the server has a text model)."
    )


class HealthStatus(BaseModel):
    status: str = Field(examples=["ok"])
    checks: dict[str, str] = {}
