"""The HNSW index of the embedded store, every test on both backends (faiss, usearch): recall
against exact search, filtered queries that return k whenever k matches exist, deletes (faiss:
tombstones) never returned, and the file beside the SQLite database kept in sync (incremental
add/delete, reload, rebuild when missing, damaged, stale or too full of deleted nodes)."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from lookalike.catalog import Catalog
from lookalike.index import ExactIndex
from lookalike.index.hnsw import ANN_BACKENDS, ann_folder, ann_index_class

BACKENDS = pytest.mark.parametrize("backend", ANN_BACKENDS)


def _clustered(n: int, dim: int = 64, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((50, dim)).astype(np.float32)
    x = centres[rng.integers(0, 50, n)] + 0.3 * rng.standard_normal((n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


@pytest.fixture(scope="module")
def vectors():
    data = _clustered(4000)
    ids = np.arange(10, 10 + len(data), dtype=np.int64)  # ids are image ids, not row numbers
    return ids, data, _clustered(100, seed=1)


def _recall(a: ExactIndex, b, queries, k=10, allowed=None) -> float:
    hits = []
    for q in queries:
        truth = set(a.search(q, k, allowed)[0].tolist())
        got = b.search(q, k, allowed)[0].tolist()
        hits.append(len(truth & set(got)) / max(1, len(truth)))
    return float(np.mean(hits))


@BACKENDS
def test_recall_against_exact_search(vectors, backend):
    ids, data, queries = vectors
    exact, ann = ExactIndex(ids, data), ann_index_class(backend).build(ids, data)
    assert len(ann) == len(ids) and ann.dim == 64
    assert _recall(exact, ann, queries) >= 0.95
    got_ids, scores = ann.search(queries[0], 10)
    assert np.all(np.diff(scores) <= 1e-6)  # best first
    np.testing.assert_allclose(scores, data[np.searchsorted(ids, got_ids)] @ queries[0], atol=1e-5)


@BACKENDS
@pytest.mark.parametrize("graph", [False, True], ids=["default", "graph-only"])
@pytest.mark.parametrize("fraction", [0.5, 0.05, 0.001])
def test_filtered_search_returns_k_when_k_match(vectors, fraction, graph, backend):
    ids, data, queries = vectors
    exact, ann = ExactIndex(ids, data), ann_index_class(backend).build(ids, data)
    if graph:  # no exact search by size: every filter goes through the graph first
        ann.exact_allowed_max, ann.exact_allowed_fraction = 0, 0.0
    rng = np.random.default_rng(3)
    allowed = np.sort(rng.choice(ids, max(4, int(fraction * len(ids))), replace=False))
    k = 10
    for q in queries[:30]:
        got, _ = ann.search(q, k, allowed)
        assert len(got) == min(k, len(allowed))
        assert np.isin(got, allowed).all()
    assert _recall(exact, ann, queries[:30], k, allowed) >= 0.95


@BACKENDS
def test_deletes_and_readds_keep_recall(vectors, backend):
    ids, data, queries = vectors
    exact, ann = ExactIndex(ids, data), ann_index_class(backend).build(ids, data)
    fresh = _recall(exact, ann, queries)
    churn = np.random.default_rng(4).choice(len(ids), int(0.3 * len(ids)), replace=False)
    ann.remove(ids[churn])
    assert len(ann) == len(ids) - len(churn)
    assert not np.isin(ann.search(queries[0], 50)[0], ids[churn]).any()
    ann.add(ids[churn], data[churn])
    assert len(ann) == len(ids)
    assert _recall(exact, ann, queries) >= fresh - 0.01


# --- the index beside the SQLite file ----------------------------------------------------------
@pytest.fixture(params=ANN_BACKENDS)
def backend(request):
    return request.param


@pytest.fixture
def catalog(tmp_path, backend):
    cat = Catalog.open(tmp_path / "shop.db")
    cat.ann_min_vectors = 0  # HNSW even for this small catalog
    cat.ann_backend = backend
    cat.index("fashion-mnist:test", model="pixels", limit=300)
    yield cat
    cat.close()


def _exact_ids(cat: Catalog, q: np.ndarray, k: int) -> list[str]:
    ids, vecs = cat.store.load_vectors("pixels")
    pks, images = cat.store.load_links()
    owner = dict(zip(images.tolist(), pks.tolist(), strict=True))
    top, _ = ExactIndex(ids, vecs).search(q, k)
    recs = cat.store.products_by_pk(owner[i] for i in top.tolist())
    return [recs[owner[i]].product_id for i in top.tolist()]


def test_catalog_uses_hnsw_beside_the_file_and_matches_exact(catalog, tmp_path, backend):
    q = catalog.product_vector("fmnist-test-7")
    hits = catalog.search_vector(q, k=10)
    ann = catalog._ann["pixels"]
    assert ann.last_action == "built" and isinstance(catalog._views["pixels"].index, ann_index_class(backend))
    assert ann.path.parent == ann_folder(catalog.store) == tmp_path / "shop.db-ann"
    assert ann.path.suffix == f".{backend}" and ann.backend == backend
    assert ann.path.exists() and ann.stamp_path.exists()
    assert [h.product_id for h in hits] == _exact_ids(catalog, q, 10)
    filtered = catalog.search_vector(q, k=5, filters={"category": "Bag"})
    assert len(filtered) == 5 and {h.category for h in filtered} == {"Bag"}


def test_check_index_measures_the_serving_index_against_exact(catalog, backend):
    report = catalog.check_index(samples=40, k=5)
    assert report["index"] == backend and report["model"] == "pixels"
    assert report["vectors"] == 300 and report["samples"] == 40 and report["k"] == 5
    assert report["recall@5"] >= 0.9
    assert 0 < report["p50_ms"] <= report["p99_ms"]


def test_small_catalogs_search_exactly(tmp_path):
    with Catalog.open(tmp_path / "small.db") as cat:
        cat.index("fashion-mnist:test", model="pixels", limit=50)
        cat.search_vector(cat.product_vector("fmnist-test-1"), k=3)
        assert isinstance(cat._views["pixels"].index, ExactIndex)
        assert not ann_folder(cat.store).exists()


def test_adds_and_deletes_update_the_index_incrementally(catalog):
    q = catalog.product_vector("fmnist-test-3")
    catalog.search_vector(q, k=3)
    ann = catalog._ann["pixels"]
    index = ann.index
    catalog.index("fashion-mnist:test", model="pixels", limit=340)  # 40 more
    hits = catalog.search_vector(catalog.product_vector("fmnist-test-330"), k=1)
    assert ann.last_action == "updated" and ann.index is index and len(index) == 340
    assert hits[0].product_id == "fmnist-test-330"
    catalog.delete("fmnist-test-330")
    hits = catalog.search_vector(q, k=340)
    assert ann.last_action == "updated" and len(index) == 339
    assert "fmnist-test-330" not in {h.product_id for h in hits} and len(hits) == 339


def test_reopen_loads_the_file_and_catches_up_when_stale(catalog, tmp_path, backend):
    q = catalog.product_vector("fmnist-test-9")
    before = [h.product_id for h in catalog.search_vector(q, k=10)]
    catalog._ann["pixels"].save()
    db = tmp_path / "shop.db"
    with Catalog.open(db) as again:
        again.ann_min_vectors, again.ann_backend = 0, backend
        assert [h.product_id for h in again.search_vector(q, k=10)] == before
        assert again._ann["pixels"].last_action == "loaded"
    # another process writes while no index is open: the stamp is now stale
    with Catalog.open(db) as writer:
        writer.ann_min_vectors = None
        writer.index("fashion-mnist:test", model="pixels", limit=320)
    with Catalog.open(db) as again:
        again.ann_min_vectors, again.ann_backend = 0, backend
        hits = again.search_vector(again.product_vector("fmnist-test-315"), k=1)
        assert again._ann["pixels"].last_action == "updated" and hits[0].product_id == "fmnist-test-315"
        assert len(again._ann["pixels"].index) == 320


@pytest.mark.parametrize("damage", ["missing", "corrupt", "other-catalog"])
def test_missing_or_damaged_index_is_rebuilt(catalog, tmp_path, damage, backend):
    q = catalog.product_vector("fmnist-test-2")
    before = [h.product_id for h in catalog.search_vector(q, k=5)]
    ann = catalog._ann["pixels"]
    if damage == "missing":
        ann.path.unlink()
    elif damage == "corrupt":
        ann.path.write_bytes(b"\x00" * 100)
    else:
        catalog.store.set_meta("catalog_uuid", "someone-else")
    with Catalog.open(tmp_path / "shop.db") as again:
        again.ann_min_vectors, again.ann_backend = 0, backend
        assert [h.product_id for h in again.search_vector(q, k=5)] == before
        assert again._ann["pixels"].last_action == "built"


@BACKENDS
def test_exact_filter_cache_follows_deletes(vectors, backend):
    ids, data, queries = vectors
    ann = ann_index_class(backend).build(ids, data)
    allowed = np.sort(ids[:50])
    first, _ = ann.search(queries[0], 5, allowed)  # exact (few allowed); vectors now cached
    ann.remove(first[:1])
    again, _ = ann.search(queries[0], 5, allowed)
    assert first[0] not in again and len(again) == 5
    assert again.tolist()[:4] == first.tolist()[1:]


@BACKENDS
@pytest.mark.parametrize("graph", [False, True], ids=["default", "graph-only"])
def test_deleted_vectors_are_never_returned(vectors, backend, graph):
    ids, data, queries = vectors
    ann = ann_index_class(backend).build(ids, data)
    if graph:
        ann.exact_allowed_max, ann.exact_allowed_fraction = 0, 0.0
    gone = np.random.default_rng(5).choice(ids, 1000, replace=False)
    ann.remove(gone)
    assert ann.deleted == 1000 and len(ann) == len(ids) - 1000
    assert not np.isin(ann.keys(), gone).any()
    live = ids[~np.isin(ids, gone)]
    allowed = np.sort(ids[::2])  # a broad filter, some of its ids deleted
    for q in queries[:20]:
        got, _ = ann.search(q, 10)
        assert len(got) == 10 and not np.isin(got, gone).any()
        got, _ = ann.search(q, 10, allowed)
        assert len(got) == 10 and not np.isin(got, gone).any() and np.isin(got, allowed).all()
    live_exact = ExactIndex(live, data[np.isin(ids, live)])
    assert _recall(live_exact, ann, queries) >= 0.95
    assert _recall(live_exact, ann, queries[:30], 10, allowed) >= 0.95
    everything, _ = ann.search(queries[0], len(ids))  # as many as asked for, none of them deleted
    assert len(everything) <= len(live) and not np.isin(everything, gone).any()


@BACKENDS
def test_index_file_round_trip(vectors, backend, tmp_path):
    ids, data, queries = vectors
    cls = ann_index_class(backend)
    ann = cls.build(ids, data)
    ann.remove(ids[:300])
    path = tmp_path / f"graph{cls.suffix}"
    ann.save(path)
    again = cls(ann.dim)
    again.load(path)
    assert len(again) == len(ann) == len(ids) - 300
    np.testing.assert_array_equal(np.sort(again.keys()), np.sort(ann.keys()))
    for q in queries[:20]:
        np.testing.assert_array_equal(again.search(q, 10)[0], ann.search(q, 10)[0])
    if backend == "faiss":  # the tombstones travel with the file
        assert again.deleted == 300
        assert not np.isin(again.search(queries[0], 500)[0], ids[:300]).any()


def test_too_many_deletes_rebuild_the_graph(catalog, backend):
    q = catalog.product_vector("fmnist-test-4")
    catalog.search_vector(q, k=3)
    ann = catalog._ann["pixels"]
    for i in range(100, 200):  # a third of the catalog: more than MAX_DELETED_FRACTION
        catalog.delete(f"fmnist-test-{i}")
    hits = catalog.search_vector(q, k=10)
    assert ann.last_action == "built" and ann.index.deleted == 0 and len(ann.index) == 200
    assert [h.product_id for h in hits] == _exact_ids(catalog, q, 10)


def test_switching_backend_builds_its_own_index(tmp_path):
    db = tmp_path / "shop.db"
    with Catalog.open(db) as cat:
        cat.ann_min_vectors, cat.ann_backend = 0, "usearch"
        cat.index("fashion-mnist:test", model="pixels", limit=300)
        q = cat.product_vector("fmnist-test-5")
        before = [h.product_id for h in cat.search_vector(q, k=10)]
    with Catalog.open(db) as cat:
        cat.ann_min_vectors, cat.ann_backend = 0, "faiss"
        assert [h.product_id for h in cat.search_vector(q, k=10)] == before
        ann = cat._ann["pixels"]
        assert ann.last_action == "built" and ann.path.suffix == ".faiss"
        assert ann.path.with_suffix(".usearch").exists()  # the other backend's file is left alone


def test_backend_is_a_setting(tmp_path):
    from pydantic import ValidationError

    from lookalike.config import Settings
    from lookalike.errors import InvalidRequest

    settings = Settings(data_dir=tmp_path, ann="usearch")
    with Catalog.open(tmp_path / "shop.db", settings=settings) as cat:
        assert cat.ann_backend == "usearch"
    assert Settings(data_dir=tmp_path).ann == ANN_BACKENDS[0]
    with pytest.raises(ValidationError):
        Settings(data_dir=tmp_path, ann="annoy")
    with pytest.raises(InvalidRequest, match="unknown ANN backend 'annoy'"):
        ann_index_class("annoy")


@BACKENDS
def test_searches_while_the_index_changes(vectors, backend):
    """Searching threads see a consistent index while another thread adds and deletes (faiss
    storage moves as it grows: without the index's lock this reads freed memory)."""
    ids, data, queries = vectors
    ann = ann_index_class(backend).build(ids[:1000], data[:1000])
    errors, stop = [], threading.Event()

    def search():
        allowed = np.sort(ids[::3])
        while not stop.is_set():
            for q in queries[:10]:
                for got in (ann.search(q, 10)[0], ann.search(q, 10, allowed)[0]):
                    if len(got) != 10 or (got < ids[0]).any() or (got > ids[-1]).any():
                        errors.append(got)

    threads = [threading.Thread(target=search) for _ in range(3)]
    for t in threads:
        t.start()
    try:
        for s in range(1000, len(ids), 250):
            ann.add(ids[s : s + 250], data[s : s + 250])
            ann.remove(ids[s - 100 : s])
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert not errors
    assert len(ann) == len(ids) - 100 * len(range(1000, len(ids), 250))


def test_deletes_by_another_process_are_applied_on_open(catalog, tmp_path, backend):
    q = catalog.product_vector("fmnist-test-11")
    catalog.search_vector(q, k=3)
    catalog._ann["pixels"].save()
    db = tmp_path / "shop.db"
    gone = [h.product_id for h in catalog.search_vector(q, k=5)]
    with Catalog.open(db) as writer:  # no index open: the stamp goes stale
        writer.ann_min_vectors = None
        for pid in gone:
            writer.delete(pid)
    with Catalog.open(db) as again:
        again.ann_min_vectors, again.ann_backend = 0, backend
        hits = again.search_vector(q, k=295)
        ann = again._ann["pixels"]
        assert ann.last_action == "updated" and len(ann.index) == 295 and ann.index.deleted == 5
        assert len(hits) == 295 and not set(gone) & {h.product_id for h in hits}
        ann.save()
    with Catalog.open(db) as third:  # the tombstones (faiss) / deleted count (usearch) persist
        third.ann_min_vectors, third.ann_backend = 0, backend
        hits = third.search_vector(q, k=10)
        assert third._ann["pixels"].last_action == "loaded" and third._ann["pixels"].index.deleted == 5
        assert not set(gone) & {h.product_id for h in hits}
