"""PostgreSQL + pgvector specifics on a real server: migrations, the HNSW index, search in the
database (filtered with iterative scans or exactly), shared use by several catalogs, `lookalike db`."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import psycopg
import pytest

from lookalike.catalog import Catalog
from lookalike.errors import StoreError
from lookalike.index import ExactIndex
from lookalike.index.pgvector import PgVectorIndex
from lookalike.store.postgres import MIGRATIONS, PostgresStore, index_name

LOOKALIKE = str(Path(sys.executable).parent / "lookalike")


@pytest.fixture
def pg_catalog(postgres_db_url):
    cat = Catalog.open(postgres_db_url)
    cat.index("fashion-mnist:test", model="pixels", limit=300)
    yield cat
    cat.close()


def test_migrations_are_numbered_and_recorded(postgres_db_url):
    PostgresStore(postgres_db_url).close()
    store = PostgresStore(postgres_db_url)  # reopening applies nothing twice
    assert store.schema_version() == max(v for v, _, _ in MIGRATIONS) == 2
    rows = store._query("SELECT version, name FROM schema_migrations ORDER BY version")
    assert rows == [(1, "create_tables"), (2, "create_jobs")]
    store._query("INSERT INTO schema_migrations(version, name) VALUES (99, 'from_the_future') RETURNING 1")
    store.close()
    with pytest.raises(StoreError, match="schema version 99, newer than this lookalike"):
        PostgresStore(postgres_db_url)


def test_vectors_in_a_vector_column_with_an_hnsw_cosine_index(pg_catalog):
    store = pg_catalog.store
    indexdef = "SELECT indexdef FROM pg_indexes WHERE indexname = %s"
    # writes do not grow a graph row by row: the first search builds it over the stored vectors
    assert store._query(indexdef, (index_name("pixels"),)) == []
    pg_catalog.search_vector(pg_catalog.product_vector("fmnist-test-0"), k=3)
    (definition,) = store._query(indexdef, (index_name("pixels"),))[0]
    assert "USING hnsw" in definition and "vector_cosine_ops" in definition and "'pixels'" in definition
    assert store.hnsw_options("pixels") == {"m": 32, "ef_construction": 128}
    # from then on writes maintain it (the index stays; new products are found)
    pg_catalog.index("fashion-mnist:test", model="pixels", limit=320)
    hits = pg_catalog.search_vector(pg_catalog.product_vector("fmnist-test-315"), k=1)
    assert hits[0].product_id == "fmnist-test-315" and store.hnsw_options("pixels")["m"] == 32
    (typ,) = store._query(
        "SELECT format_type(atttypid, atttypmod) FROM pg_attribute "
        "WHERE attrelid = 'embeddings'::regclass AND attname = 'vector'"
    )[0]
    assert typ == "vector"
    # the kNN query can be answered by the HNSW index (at 300 rows the planner would rather sort)
    index = PgVectorIndex(store, "pixels")
    with store._tx() as c:
        c.execute("ANALYZE embeddings")
        c.execute("SET LOCAL enable_seqscan = off")
        c.execute("SET LOCAL enable_bitmapscan = off")
        c.execute("SET LOCAL enable_sort = off")
        plan = "\n".join(
            r[0]
            for r in c.execute(
                "EXPLAIN SELECT image_id FROM embeddings e WHERE e.model = 'pixels' "
                "ORDER BY e.vector::vector(1024) <=> %s::vector(1024) LIMIT 10",
                (index._q(np.ones(1024, dtype=np.float32)),),
            )
        )
    assert index_name("pixels") in plan


def test_search_runs_in_the_database_and_matches_exact(pg_catalog, fmnist_test):
    view_index = pg_catalog._view("pixels").index
    assert isinstance(view_index, PgVectorIndex) and len(view_index) == 300
    ids, vecs = pg_catalog.store.load_vectors("pixels")
    exact = ExactIndex(ids, vecs)
    for pid in ("fmnist-test-0", "fmnist-test-17", "fmnist-test-123"):
        q = pg_catalog.product_vector(pid)
        hits = pg_catalog.search_vector(q, k=10)
        top, scores = exact.search(q, 10)
        assert [h.image_id for h in hits] == top.tolist()
        np.testing.assert_allclose([h.score for h in hits], scores, atol=1e-5)


@pytest.mark.parametrize(
    ("filters", "exact"),
    [({"split": "test"}, False), ({"category": "Bag"}, True), ({"category": "Bag", "split": "test"}, True)],
)
def test_filtered_search_iterative_scan_or_exact(pg_catalog, filters, exact, monkeypatch):
    import lookalike.index.pgvector as pgv

    # with a low threshold the category filter (about 10%) goes through the iterative index scan too
    monkeypatch.setattr(pgv, "EXACT_FILTER_MAX", 100 if not exact else 10_000)
    q = pg_catalog.product_vector("fmnist-test-5")
    matching = pg_catalog.store.matching_product_pks(filters)
    hits = pg_catalog.search_vector(q, k=len(matching) + 5, filters=filters)
    assert len(hits) == len(matching)  # never fewer than k when k match
    hits = pg_catalog.search_vector(q, k=10, filters=filters)
    assert len(hits) == 10 and all(h.category == "Bag" for h in hits if "category" in filters)
    ids, vecs = pg_catalog.store.load_vectors("pixels")
    pks, images = pg_catalog.store.load_links()
    allowed = np.sort(images[np.isin(pks, matching)])
    top, _ = ExactIndex(ids, vecs).search(q, 10, allowed)
    assert [h.image_id for h in hits] == top.tolist()


def test_very_selective_filter_uses_exact_search(pg_catalog):
    pg_catalog.set_attributes({"fmnist-test-42": {"colour": "teal"}, "fmnist-test-43": {"colour": 7}})
    q = pg_catalog.product_vector("fmnist-test-0")
    assert [h.product_id for h in pg_catalog.search_vector(q, k=5, filters={"colour": "teal"})] == [
        "fmnist-test-42"
    ]
    assert [h.product_id for h in pg_catalog.search_vector(q, k=5, filters={"colour": "7"})] == [
        "fmnist-test-43"
    ]
    assert pg_catalog.search_vector(q, k=5, filters={"colour": "red"}) == []


def test_two_catalogs_share_one_database(pg_catalog, postgres_db_url):
    with Catalog.open(postgres_db_url) as other:
        other.index("fashion-mnist:test", model="pixels", limit=310)
        other.delete("fmnist-test-1")
    # the first catalog sees the other's writes on its next search (generation changed)
    q = pg_catalog.product_vector("fmnist-test-305")
    assert pg_catalog.search_vector(q, k=1)[0].product_id == "fmnist-test-305"
    assert pg_catalog.stats()["products"] == 309
    assert "fmnist-test-1" not in {h.product_id for h in pg_catalog.search_vector(q, k=309)}


def test_db_cli_starts_a_local_server(tmp_path):
    import tempfile

    folder = Path(tempfile.mkdtemp(prefix="lookalike-dbcli-"))
    env = {**os.environ, "LOOKALIKE_DATA_DIR": str(folder), "LOOKALIKE_PROGRESS": "0"}

    def run(*args):
        return subprocess.run([LOOKALIKE, *args], env=env, capture_output=True, text=True, timeout=120)

    try:
        assert run("db", "status").returncode == 3
        out = run("db", "start", "--export")
        assert out.returncode == 0, out.stderr
        url = out.stdout.strip().removeprefix("export LOOKALIKE_DB=")
        assert url.startswith("postgresql://") and url.endswith("/lookalike")
        assert run("db", "url").stdout.strip() == url
        out = run("index", "fashion-mnist:test", "--limit", "20", "--model", "pixels", "--db", url)
        assert out.returncode == 0, out.stderr
        with psycopg.connect(url) as conn:
            assert conn.execute("SELECT COUNT(*) FROM products").fetchone()[0] == 20
        assert run("db", "start").returncode == 0  # already running: fine
        assert run("db", "stop").returncode == 0
        out = run("stats", "--db", url)
        assert out.returncode == 1 and "unreachable" in out.stderr and "Traceback" not in out.stderr
    finally:
        run("db", "stop")
        import shutil

        shutil.rmtree(folder, ignore_errors=True)
