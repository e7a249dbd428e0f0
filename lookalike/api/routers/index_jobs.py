"""Index jobs: POST /v1/index-jobs submits one (Celery workers, or in-process without Redis);
GET /v1/index-jobs/{id} reports its state, progress counts, failures and the bad-item report."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path
from pydantic import BaseModel, Field

from lookalike.api.deps import CatalogDep, SettingsDep, WriteKeyDep, require_read_key
from lookalike.api.routers.search import ERRORS
from lookalike.errors import InvalidRequest

#: models a request may name without the catalog having them yet (shipped with the package)
BUILT_IN_MODELS = ("default", "pixels")

router = APIRouter(prefix="/v1/index-jobs", tags=["index jobs"], dependencies=[Depends(require_read_key)])


class IndexJobCreate(BaseModel):
    source: str = Field(
        max_length=4096,
        description="What to index, as the workers see it: a folder of images, a .csv/.jsonl table "
        "(paths or URLs) or fashion-mnist[:train|test]. Folders and tables, and every local image "
        "they list, must lie inside the server's LOOKALIKE_INDEX_ROOTS.",
        examples=["fashion-mnist:test"],
    )
    model: str | None = Field(
        None,
        max_length=500,
        description="Embedder: one the catalog is indexed with, or `default` / `pixels` (default: the "
        "catalog's model). Other models (checkpoints, torchvision) are indexed from the command line.",
    )
    limit: int | None = Field(None, ge=1, description="Index only the first N products.")
    batch_products: int | None = Field(None, ge=1, le=10_000, description="Products per batch (default 256).")


class JobBatches(BaseModel):
    total: int
    done: int
    failed: int
    running: int
    queued: int
    attempts: int = Field(description="Batch runs so far (a redone batch counts twice).")


class BadItem(BaseModel):
    product_id: str | None = None
    item: str
    kind: str
    reason: str


class IndexJobPublic(BaseModel):
    id: str
    state: str = Field(description="queued, running, succeeded or failed.", examples=["running"])
    source: str | None
    model: str | None
    limit: int | None = None
    products_total: int | None
    batches: JobBatches
    products_seen: int
    products_indexed: int
    products_failed: int
    products_created: int
    products_updated: int
    images_seen: int
    images_failed: int
    images_embedded: int
    images_reused: int
    failures: list[BadItem] = Field(description="The bad-item report: each skipped image or row and why.")
    errors: list[dict] = Field(description="Batch errors (retried batches keep their last error).")
    error: str | None = None
    created_at: str
    started_at: str | None
    finished_at: str | None


JobId = Annotated[str, Path(pattern=r"^[0-9a-f]{16}$", description="The job id.")]


@router.post(
    "", status_code=202, response_model=IndexJobPublic, responses=ERRORS, summary="Submit an index job"
)
def create_index_job(
    body: IndexJobCreate, catalog: CatalogDep, settings: SettingsDep, _: WriteKeyDep
) -> IndexJobPublic:
    from lookalike.jobs import submit_index_job
    from lookalike.sources import check_source_within

    check_source_within(body.source, settings.index_roots)  # a server path is hostile until checked
    if body.model is not None:  # nor load a model file or download weights a request names
        allowed = {*catalog.store.models(), *BUILT_IN_MODELS}
        if body.model not in allowed:
            raise InvalidRequest(
                f"model {body.model!r} is not one this server loads for a request: use one the catalog "
                f"is indexed with or a built-in one ({', '.join(sorted(allowed))}); index with other "
                "models from the command line (lookalike index --model)"
            )
    job = submit_index_job(
        body.source,
        db=catalog.store.url,
        model=body.model,
        limit=body.limit,
        batch_products=body.batch_products,
        background=True,
        settings=settings,
    )
    return IndexJobPublic(**job)


@router.get("/{job_id}", response_model=IndexJobPublic, responses=ERRORS, summary="An index job's progress")
def get_index_job(job_id: JobId, catalog: CatalogDep) -> IndexJobPublic:
    from lookalike.jobs.state import JobTable

    return IndexJobPublic(**JobTable(catalog.store).get(job_id))
