"""Store.write_batch on both backends: exact counts, idempotency, merging, a product named twice in
one batch, replaced images, and (PostgreSQL) a product created concurrently by another writer."""

from __future__ import annotations

import hashlib
import threading

import numpy as np
import psycopg
import pytest

from lookalike.errors import InvalidRequest
from lookalike.store import NewImage, ProductWrite, WriteResult, open_store


def _image(name: str, dim: int = 8) -> NewImage:
    sha = hashlib.sha256(name.encode()).hexdigest()
    vec = np.random.default_rng(len(name) + sum(map(ord, name))).standard_normal(dim).astype(np.float32)
    return NewImage(
        sha, f"test:{name}", 28, 28, "0f" * 8, b"thumb-" + name.encode(), vec / np.linalg.norm(vec)
    )


def _links(store) -> dict[str, list[int]]:
    return {pid: rec.image_ids for pid, rec in store.get_products(["a", "b", "c"]).items()}


@pytest.fixture
def store(db_url):
    s = open_store(db_url)
    yield s
    s.close()


def test_counts_idempotency_and_merge(store):
    a1, a2, b1 = _image("a1"), _image("a2"), _image("b1")
    first = store.write_batch(
        "m",
        [a1, a2, b1],
        [
            ProductWrite(
                "a",
                title="A",
                category="Bag",
                attributes={"colour": "red"},
                image_shas=[a1.sha256, a2.sha256],
            ),
            ProductWrite("b", title="B", image_shas=[b1.sha256, b1.sha256]),  # a repeated image links once
        ],
    )
    assert first == WriteResult(products_created=2, images_added=3, embeddings_added=3, links_added=3)
    # the same batch again changes nothing
    again = store.write_batch(
        "m",
        [a1, a2, b1],
        [
            ProductWrite(
                "a",
                title="A",
                category="Bag",
                attributes={"colour": "red"},
                image_shas=[a1.sha256, a2.sha256],
            ),
            ProductWrite("b", title="B", image_shas=[b1.sha256]),
        ],
    )
    assert again == WriteResult()
    assert store.counts() == {"products": 2, "images": 3, "links": 3, "embeddings": 3}
    # None keeps a field, attributes merge; an unchanged product is not counted as updated
    merged = store.write_batch(
        "m",
        [],
        [ProductWrite("a", title=None, url="https://shop/a", attributes={"size": "M"}), ProductWrite("b")],
    )
    assert merged == WriteResult(products_updated=1)
    a = store.get_products(["a"])["a"]
    assert (a.title, a.category, a.url, a.attributes) == (
        "A",
        "Bag",
        "https://shop/a",
        {"colour": "red", "size": "M"},
    )
    ids = store.images_with_sha([a1.sha256, a2.sha256], "m")
    assert a.image_ids == [ids[a1.sha256][0], ids[a2.sha256][0]]  # in the order given
    got = store.vectors_for_images([ids[a2.sha256][0]], "m")[ids[a2.sha256][0]]
    np.testing.assert_allclose(got, a2.vector, rtol=1e-6)
    pks = store.product_pks(["a", "b"])
    assert store.product_labels([pks["b"], pks["a"], 10**9]) == {
        pks["a"]: ("a", "A", "Bag"),
        pks["b"]: ("b", "B", None),
    }


def test_a_product_named_twice_in_one_batch_is_written_in_order(store):
    c1, c2 = _image("c1"), _image("c2")
    result = store.write_batch(
        "m",
        [c1, c2],
        [
            ProductWrite("c", title="first", attributes={"k": "1", "x": "keep"}, image_shas=[c1.sha256]),
            ProductWrite("c", title="second", attributes={"k": "2"}, image_shas=[c2.sha256]),
        ],
    )
    assert result == WriteResult(
        products_created=1, products_updated=1, images_added=2, embeddings_added=2, links_added=2
    )
    c = store.get_products(["c"])["c"]
    assert (c.title, c.attributes) == ("second", {"k": "2", "x": "keep"})
    assert len(c.image_ids) == 2


def test_replace_images_drops_other_links_and_orphans(store):
    a1, a2, a3 = _image("a1"), _image("a2"), _image("a3")
    store.write_batch("m", [a1, a2], [ProductWrite("a", image_shas=[a1.sha256, a2.sha256])])
    result = store.write_batch(
        "m", [a3], [ProductWrite("a", image_shas=[a2.sha256, a3.sha256], replace_images=True)]
    )
    assert result == WriteResult(images_added=1, embeddings_added=1, links_added=1, links_removed=1)
    ids = store.images_with_sha([a1.sha256, a2.sha256, a3.sha256], "m")
    assert a1.sha256 not in ids  # its only product dropped it: the orphan image went too
    assert sorted(_links(store)["a"]) == sorted([ids[a2.sha256][0], ids[a3.sha256][0]])
    assert store.counts() == {"products": 1, "images": 2, "links": 2, "embeddings": 2}


def test_product_created_by_a_concurrent_writer_is_merged(postgres_db_url):
    """Another transaction inserts the product first and commits while our batch waits on it."""
    store = open_store(postgres_db_url)
    try:
        im = _image("r1")
        other = psycopg.connect(postgres_db_url)
        other.execute(
            "INSERT INTO products(product_id, title, category, attributes, created_at, updated_at) "
            "VALUES ('r', 'theirs', 'Bag', '{\"a\": \"1\"}', now(), now())"
        )  # not committed yet
        out: list[WriteResult] = []
        writer = threading.Thread(
            target=lambda: out.append(
                store.write_batch(
                    "m",
                    [im],
                    [ProductWrite("r", title="ours", attributes={"b": "2"}, image_shas=[im.sha256])],
                )
            )
        )
        writer.start()
        writer.join(1.0)
        assert writer.is_alive()  # blocked on the other writer's row
        other.commit()
        other.close()
        writer.join(10)
        assert out == [WriteResult(products_updated=1, images_added=1, embeddings_added=1, links_added=1)]
        r = store.get_products(["r"])["r"]
        assert (r.title, r.category, r.attributes) == ("ours", "Bag", {"a": "1", "b": "2"})
        assert store.counts()["products"] == 1
    finally:
        store.close()


def test_hnsw_options_from_the_url(postgres_db_url):
    store = open_store(postgres_db_url + "?hnsw_m=12&hnsw_ef_construction=40&hnsw_ef_search=77")
    try:
        assert store.hnsw == {"m": 12, "ef_construction": 40, "ef_search": 77}
        im = _image("h1")
        store.write_batch("m", [im], [ProductWrite("h", image_shas=[im.sha256])])
        assert store.hnsw_options("m") == {}  # built by the first search, not by writes
        index = store.make_index("m")
        assert store.hnsw_options("m") == {"m": 12, "ef_construction": 40} and index.ef_search == 77
    finally:
        store.close()
    for bad, message in [
        ("?hnsw_m=abc", "hnsw_m must be an integer"),
        ("?hnsw_eff=3", "unknown option"),
        ("?sslmod=disable", 'invalid URI query parameter: "sslmod"'),  # libpq's options are checked too
        ("?hnsw_m=64&hnsw_ef_construction=64", "ef_construction >= 2\\*m"),
    ]:
        with pytest.raises(InvalidRequest, match=message):
            open_store(postgres_db_url + bad)
