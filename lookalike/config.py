"""Settings, read from LOOKALIKE_* environment variables (and a .env file)."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

import platformdirs
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


def default_data_dir() -> Path:
    return Path(platformdirs.user_data_dir("lookalike", appauthor=False))


def default_cache_dir() -> Path:
    return Path(platformdirs.user_cache_dir("lookalike", appauthor=False))


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="LOOKALIKE_", env_file=".env", extra="ignore")

    data_dir: Path = Field(default_factory=default_data_dir)
    cache_dir: Path = Field(default_factory=default_cache_dir)
    #: database: a SQLite file path or a postgresql:// URL; default is <data_dir>/catalog.db
    db: str | None = None
    #: embedder used when a command does not name one
    model: str = "default"
    #: where networks run: auto (a CUDA GPU, then Apple MPS, then the CPU), cpu, cuda, cuda:N or mps
    device: str = "auto"

    #: the verifier of re-ranked searches (``rerank=N``): "default" (the shipped one, trained for
    #: the default model), "none" (alignment only) or a checkpoint from `lookalike train verifier`
    verifier: str = "default"
    #: how the verifier computes: fp32, or bf16 (about twice as fast on CPUs with native bfloat16,
    #: AVX512-BF16 or AMX, and possibly slower elsewhere; its logits move by up to about 0.1)
    verifier_precision: Literal["fp32", "bf16"] = "fp32"
    #: a text model from `lookalike train text` (words -> the catalog model's space), for text
    #: search and tags; none by default
    text_model: str | None = None

    # image safety limits
    max_image_bytes: int = 20 * 1024 * 1024
    max_image_pixels: int = 50_000_000
    #: decoded images longer than this (px) are shrunk to it right after decoding (the size stored
    #: is the original's); models see far smaller images, and memory stays bounded
    max_image_side: int = Field(2048, ge=64)
    fetch_timeout: float = 10.0
    max_redirects: int = 5
    #: allow fetching URLs that resolve to loopback/private/link-local/multicast addresses
    allow_private_urls: bool = False
    #: networks (CIDR) allowed even though private, e.g. an internal image CDN
    allowed_private_networks: list[str] = []
    #: folders the HTTP API may index from (POST /v1/index-jobs): the source and every local image
    #: it lists must lie inside one. Empty: the API indexes only the built-in datasets. The CLI and
    #: the Python API are not restricted. Env: LOOKALIKE_INDEX_ROOTS='["/srv/catalog"]'
    index_roots: list[Path] = []

    # batching
    batch_size: int = 256

    # service
    api_key: str | None = None
    protect_reads: bool = False
    max_upload_bytes: int = 10 * 1024 * 1024
    request_timeout: float = 30.0
    #: searches running at once (default: the number of CPU cores)
    inference_threads: int | None = None
    #: searches running or queued before the API answers 429
    max_pending_requests: int = 64
    environment: str = "development"

    # scale-out
    redis_url: str | None = None
    #: ANN index of the SQLite store (catalogs of 20,000+ vectors): faiss or usearch (HNSW graphs), or
    #: pqscan (quantized scan of every vector, re-ranked exactly; for spread-out embeddings)
    ann: Literal["faiss", "usearch", "pqscan"] = "faiss"

    # demo data
    fashion_mnist_dir: Path | None = None

    def default_db(self) -> str:
        return self.db or str(self.data_dir / "catalog.db")


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
