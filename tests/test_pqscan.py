"""The graph-free ``pqscan`` index (4-bit PQ fast scan + exact re-ranking): exact below its training
threshold, trained and re-trained as it grows, high recall on unstructured (random) vectors where an
HNSW graph needs a far wider beam, and a file round trip in both states. The shared ANN behaviour
(filters, deletes, catalog sync) is tested for every backend in tests/test_hnsw.py."""

from __future__ import annotations

import faiss
import numpy as np
import pytest

from lookalike.index import ExactIndex, faiss_pq
from lookalike.index.faiss_pq import FaissPQScanIndex


def _random(n: int, dim: int = 64, seed: int = 0) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _recall(index, exact, queries, k=10) -> float:
    return float(
        np.mean(
            [
                len(set(index.search(q, k)[0].tolist()) & set(exact.search(q, k)[0].tolist())) / k
                for q in queries
            ]
        )
    )


def test_small_index_is_exact_until_trained(tmp_path):
    data, queries = _random(faiss_pq.TRAIN_MIN - 1), _random(20, seed=1)
    ids = np.arange(100, 100 + len(data))
    index = FaissPQScanIndex.build(ids, data)
    assert index._index is None  # too few vectors to train the quantizer
    exact = ExactIndex(ids, data)
    for q in queries:
        got, scores = index.search(q, 10)
        want, want_scores = exact.search(q, 10)
        assert got.tolist() == want.tolist()
        np.testing.assert_allclose(scores, want_scores, atol=1e-5)
    index.save(tmp_path / "m.pqscan")
    again = FaissPQScanIndex(64)
    again.load(tmp_path / "m.pqscan")
    assert again._index is None and len(again) == len(ids)
    assert again.search(queries[0], 10)[0].tolist() == exact.search(queries[0], 10)[0].tolist()
    more = _random(10, seed=2)
    again.add(np.arange(5000, 5010), more)  # now past the threshold: trained on every vector
    assert isinstance(again._index, faiss.IndexPreTransform) and again._index.ntotal == len(ids) + 10
    assert again.search(more[3], 1)[0].tolist() == [5003]


def test_quantizer_is_retrained_as_the_index_grows():
    data, queries = _random(7000), _random(50, seed=1)
    ids = np.arange(len(data))
    index = FaissPQScanIndex.build(ids[:1500], data[:1500])
    assert index._trained_on == 1500
    index.add(ids[1500:5000], data[1500:5000])  # under 4 x 1,500: encoded with the same codebooks
    assert index._trained_on == 1500 and index._index.ntotal == 5000
    index.add(ids[5000:6000], data[5000:6000])  # 6,000 = 4 x 1,500: re-trained on all of them
    assert index._trained_on == 6000 and index._index.ntotal == 6000
    index.add(ids[6000:], data[6000:])
    assert index._trained_on == 6000 and index._index.ntotal == 7000
    assert _recall(index, ExactIndex(ids, data), queries) >= 0.95


def test_random_vectors_keep_high_recall_where_a_graph_struggles():
    """i.i.d. vectors have no neighbourhood structure; the scan compares the query with every
    code, so recall does not depend on it (20k x 64 here, 1M x 128 in bench/bench_ann.py)."""
    data, queries = _random(20_000), _random(100, seed=1)
    ids = np.arange(1, len(data) + 1)
    exact = ExactIndex(ids, data)
    index = FaissPQScanIndex.build(ids, data)
    assert _recall(index, exact, queries) >= 0.97
    index.expansion_search = 10  # re-ranking only k candidates: the quantization error shows
    assert _recall(index, exact, queries) < 0.9


def test_file_round_trip_keeps_codes_vectors_and_tombstones(tmp_path):
    data, queries = _random(3000), _random(20, seed=1)
    ids = np.arange(1, 3001)
    index = FaissPQScanIndex.build(ids, data)
    index.remove(ids[:100])
    path = tmp_path / "m.pqscan"
    index.save(path)
    assert path.exists() and FaissPQScanIndex.vectors_path(path).exists()
    again = FaissPQScanIndex(64)
    again.load(path)
    assert len(again) == 2900 and again.deleted == 100
    for q in queries:
        assert again.search(q, 10)[0].tolist() == index.search(q, 10)[0].tolist()
    assert not np.isin(again.search(queries[0], 200)[0], ids[:100]).any()
    np.save(FaissPQScanIndex.vectors_path(path), data[:10])  # vectors of another index
    with pytest.raises(ValueError, match="do not match"):
        FaissPQScanIndex(64).load(path)


def test_catalog_check_tells_a_starved_graph_from_the_scan(tmp_path):
    """On spread-out (random, 256-d) vectors an HNSW graph searched with a narrow beam misses true
    neighbours; ``Catalog.check_index`` measures that on the catalog's own vectors, and the same
    catalog switched to pqscan finds them."""
    import hashlib

    from lookalike.catalog import Catalog
    from lookalike.store import NewImage, ProductWrite
    from lookalike.store.sqlite import SQLiteStore

    data = _random(20_000, dim=256)
    store = SQLiteStore(tmp_path / "random.db")
    images, products = [], []
    for i, v in enumerate(data):
        sha = hashlib.sha256(f"img{i}".encode()).hexdigest()
        images.append(NewImage(sha, f"vec:{i}", 28, 28, None, None, v))
        products.append(ProductWrite(f"p{i}", title=f"item {i}", image_shas=[sha]))
    store.write_batch("vec256", images, products)
    store.set_meta("model", "vec256")
    store.close()
    with Catalog.open(tmp_path / "random.db") as cat:
        cat.ann_backend = "faiss"
        cat.search_vector(data[0], k=1)  # builds the graph
        cat._views["vec256"].index.expansion_search = 16
        graph = cat.check_index(samples=100)
        cat.ann_backend = "pqscan"
        cat._views.clear()
        scan = cat.check_index(samples=100)
    assert graph["index"] == "faiss" and scan["index"] == "pqscan" and scan["vectors"] == 20_000
    assert graph["recall@10"] < 0.95 and scan["recall@10"] >= 0.97
