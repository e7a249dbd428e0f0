"""The HNSW (usearch) index of the embedded store: recall against exact search, filtered queries
that return k whenever k matches exist, and the file beside the SQLite database kept in sync
(incremental add/delete, reload, rebuild when missing, damaged or stale)."""

from __future__ import annotations

import numpy as np
import pytest

from lookalike.catalog import Catalog
from lookalike.index import ExactIndex
from lookalike.index.hnsw import HNSWIndex, ann_folder


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


def test_recall_against_exact_search(vectors):
    ids, data, queries = vectors
    exact, ann = ExactIndex(ids, data), HNSWIndex.build(ids, data)
    assert len(ann) == len(ids) and ann.dim == 64
    assert _recall(exact, ann, queries) >= 0.95
    got_ids, scores = ann.search(queries[0], 10)
    assert np.all(np.diff(scores) <= 1e-6)  # best first
    np.testing.assert_allclose(scores, data[np.searchsorted(ids, got_ids)] @ queries[0], atol=1e-5)


@pytest.mark.parametrize("fraction", [0.5, 0.05, 0.001])
def test_filtered_search_returns_k_when_k_match(vectors, fraction):
    ids, data, queries = vectors
    exact, ann = ExactIndex(ids, data), HNSWIndex.build(ids, data)
    rng = np.random.default_rng(3)
    allowed = np.sort(rng.choice(ids, max(4, int(fraction * len(ids))), replace=False))
    k = 10
    for q in queries[:30]:
        got, _ = ann.search(q, k, allowed)
        assert len(got) == min(k, len(allowed))
        assert np.isin(got, allowed).all()
    assert _recall(exact, ann, queries[:30], k, allowed) >= 0.95


def test_deletes_and_readds_keep_recall(vectors):
    ids, data, queries = vectors
    exact, ann = ExactIndex(ids, data), HNSWIndex.build(ids, data)
    fresh = _recall(exact, ann, queries)
    churn = np.random.default_rng(4).choice(len(ids), int(0.3 * len(ids)), replace=False)
    ann.remove(ids[churn])
    assert len(ann) == len(ids) - len(churn)
    assert not np.isin(ann.search(queries[0], 50)[0], ids[churn]).any()
    ann.add(ids[churn], data[churn])
    assert len(ann) == len(ids)
    assert _recall(exact, ann, queries) >= fresh - 0.01


# --- the index beside the SQLite file ----------------------------------------------------------
@pytest.fixture
def catalog(tmp_path):
    cat = Catalog.open(tmp_path / "shop.db")
    cat.ann_min_vectors = 0  # HNSW even for this small catalog
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


def test_catalog_uses_hnsw_beside_the_file_and_matches_exact(catalog, tmp_path):
    q = catalog.product_vector("fmnist-test-7")
    hits = catalog.search_vector(q, k=10)
    ann = catalog._ann["pixels"]
    assert ann.last_action == "built" and isinstance(catalog._views["pixels"].index, HNSWIndex)
    assert ann.path.parent == ann_folder(catalog.store) == tmp_path / "shop.db-ann"
    assert ann.path.exists() and ann.stamp_path.exists()
    assert [h.product_id for h in hits] == _exact_ids(catalog, q, 10)
    filtered = catalog.search_vector(q, k=5, filters={"category": "Bag"})
    assert len(filtered) == 5 and {h.category for h in filtered} == {"Bag"}


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


def test_reopen_loads_the_file_and_catches_up_when_stale(catalog, tmp_path):
    q = catalog.product_vector("fmnist-test-9")
    before = [h.product_id for h in catalog.search_vector(q, k=10)]
    catalog._ann["pixels"].save()
    db = tmp_path / "shop.db"
    with Catalog.open(db) as again:
        again.ann_min_vectors = 0
        assert [h.product_id for h in again.search_vector(q, k=10)] == before
        assert again._ann["pixels"].last_action == "loaded"
    # another process writes while no index is open: the stamp is now stale
    with Catalog.open(db) as writer:
        writer.ann_min_vectors = None
        writer.index("fashion-mnist:test", model="pixels", limit=320)
    with Catalog.open(db) as again:
        again.ann_min_vectors = 0
        hits = again.search_vector(again.product_vector("fmnist-test-315"), k=1)
        assert again._ann["pixels"].last_action == "updated" and hits[0].product_id == "fmnist-test-315"
        assert len(again._ann["pixels"].index) == 320


@pytest.mark.parametrize("damage", ["missing", "corrupt", "other-catalog"])
def test_missing_or_damaged_index_is_rebuilt(catalog, tmp_path, damage):
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
        again.ann_min_vectors = 0
        assert [h.product_id for h in again.search_vector(q, k=5)] == before
        assert again._ann["pixels"].last_action == "built"


def test_exact_filter_cache_follows_deletes(vectors):
    ids, data, queries = vectors
    ann = HNSWIndex.build(ids, data)
    allowed = np.sort(ids[:50])
    first, _ = ann.search(queries[0], 5, allowed)  # exact (few allowed); vectors now cached
    ann.remove(first[:1])
    again, _ = ann.search(queries[0], 5, allowed)
    assert first[0] not in again and len(again) == 5
    assert again.tolist()[:4] == first.tolist()[1:]
