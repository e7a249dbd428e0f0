"""Stores keep products, images, the product<->image many-to-many and embeddings.

``open_store(url)`` picks the backend: a file path (SQLite, the embedded default) or a
``postgresql://`` URL (PostgreSQL + pgvector).
"""

from __future__ import annotations

from pathlib import Path

from lookalike.store.base import ImageRecord, NewImage, ProductRecord, ProductWrite, Store, WriteResult

__all__ = ["ImageRecord", "NewImage", "ProductRecord", "ProductWrite", "Store", "WriteResult", "open_store"]


def open_store(url: str | Path) -> Store:
    text = str(url)
    if text.startswith(("postgresql://", "postgres://")):
        from lookalike.store.postgres import PostgresStore

        return PostgresStore(text)
    if text.startswith("sqlite:///"):
        text = text.removeprefix("sqlite:///")
    from lookalike.store.sqlite import SQLiteStore

    return SQLiteStore(Path(text))
