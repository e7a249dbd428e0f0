"""Recommendations from liked and disliked products, on a real catalog (the default model's vectors
of Fashion-MNIST test items), through the library, the CLI and the HTTP API; both store backends."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter

import numpy as np
import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from lookalike.api.app import create_app
from lookalike.catalog import Catalog
from lookalike.cli import app
from lookalike.config import Settings
from lookalike.errors import InvalidRequest, ProductNotFound

N = 600


@pytest.fixture(scope="module")
def catalog_db(tmp_path_factory) -> str:
    db = str(tmp_path_factory.mktemp("recommend") / "catalog.db")
    with Catalog.open(db) as cat:
        report = cat.index("fashion-mnist:test", model="default", limit=N, progress=False)
    assert report.products_indexed == N
    return db


@pytest.fixture(scope="module")
def by_category(catalog_db) -> dict[str, list[str]]:
    with Catalog.open(catalog_db) as cat:
        products = cat.get_products([f"fmnist-test-{i}" for i in range(N)])
    out: dict[str, list[str]] = {}
    for p in sorted(products.values(), key=lambda p: int(p.product_id.rsplit("-", 1)[1])):
        out.setdefault(p.category, []).append(p.product_id)
    return out


def test_one_taste_is_followed_and_the_liked_products_are_not_repeated(catalog_db, by_category):
    liked = by_category["Trouser"][:3]
    with Catalog.open(catalog_db) as cat:
        for method in ("balanced", "nearest", "centroid"):
            hits = cat.recommend(liked, k=10, method=method)
            assert len(hits) == 10
            assert not set(liked) & {h.product_id for h in hits}
            assert sum(h.category == "Trouser" for h in hits) >= 8, (
                method,
                Counter(h.category for h in hits),
            )
            scores = [h.score for h in hits]
            assert scores == sorted(scores, reverse=True)


def test_one_liked_product_with_nearest_is_its_similar_products(catalog_db, by_category):
    product = by_category["Bag"][0]
    with Catalog.open(catalog_db) as cat:
        recs = cat.recommend([product], k=10, method="nearest")
        similar = cat.similar(product, k=10)
    assert [h.product_id for h in recs] == [h.product_id for h in similar]
    assert [h.score for h in recs] == pytest.approx([h.score for h in similar], abs=1e-5)


def test_balanced_gives_each_liked_taste_its_share(catalog_db, by_category):
    """20 shoppers who each liked 2 + 2 products of two categories: "balanced" shows both
    categories more evenly than "nearest" (and than "centroid"), as bench/bench_recommend.py finds."""
    rng = np.random.default_rng(0)
    cats = sorted(by_category)
    balance: dict[str, list[float]] = {m: [] for m in ("balanced", "nearest", "centroid")}
    with Catalog.open(catalog_db) as cat:
        for _ in range(20):
            a, b = rng.choice(cats, 2, replace=False)
            liked = [
                *rng.choice(by_category[a], 2, replace=False),
                *rng.choice(by_category[b], 2, replace=False),
            ]
            for method, out in balance.items():
                counts = Counter(h.category for h in cat.recommend(liked, k=10, method=method))
                out.append(min(counts[a], counts[b]) / 5)
    mean = {m: float(np.mean(v)) for m, v in balance.items()}
    assert mean["balanced"] > mean["nearest"] + 0.1 and mean["balanced"] > mean["centroid"] + 0.1, mean
    assert mean["balanced"] > 0.5, mean


def test_dislikes_push_their_lookalikes_down(catalog_db, by_category):
    liked, disliked = by_category["Sneaker"][:3], by_category["Sandal"][:3]
    with Catalog.open(catalog_db) as cat:
        without = cat.recommend(liked, k=60)
        with_ = cat.recommend(liked, k=60, disliked=disliked)
        d = np.stack([cat.product_vector(p) for p in disliked])

        def nearness(hits):  # mean similarity of the recommendations to their nearest disliked product
            v = np.stack([cat.product_vector(h.product_id) for h in hits])
            return float((v @ d.T).max(axis=1).mean())

        assert nearness(with_) < nearness(without) - 0.05
    sandals = lambda hits: sum(h.category == "Sandal" for h in hits)  # noqa: E731
    assert sandals(with_) < sandals(without)
    assert not set(disliked) & {h.product_id for h in with_}


def test_exclude_and_filters(catalog_db, by_category):
    liked = by_category["Coat"][:2]
    with Catalog.open(catalog_db) as cat:
        first = cat.recommend(liked, k=5)
        skip = [h.product_id for h in first[:3]] + ["never-existed"]
        again = cat.recommend(liked, k=5, exclude=skip)
        assert not set(skip) & {h.product_id for h in again}
        assert [h.product_id for h in again[:2]] == [h.product_id for h in first[3:5]]
        bags = cat.recommend(liked, k=5, filters={"category": "Bag"})
    assert len(bags) == 5 and {h.category for h in bags} == {"Bag"}


def test_diversity_spreads_the_list(catalog_db, by_category):
    liked = by_category["Trouser"][:3]
    with Catalog.open(catalog_db) as cat:

        def spread(hits):
            v = np.stack([cat.product_vector(h.product_id) for h in hits])
            g = v @ v.T
            return float(g[~np.eye(len(v), dtype=bool)].mean())

        plain = cat.recommend(liked, k=10)
        diverse = cat.recommend(liked, k=10, diversity=0.5)
        assert len(diverse) == 10 and len({h.product_id for h in diverse}) == 10
        assert spread(diverse) < spread(plain) - 0.02


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"liked": []}, "at least one"),
        ({"liked": "fmnist-test-0"}, "list of product ids"),
        ({"liked": ["fmnist-test-0"], "disliked": ["fmnist-test-0"]}, "both liked and disliked"),
        ({"liked": ["fmnist-test-0"], "method": "mean"}, "method must be one of balanced"),
        ({"liked": ["fmnist-test-0"], "diversity": 1.5}, "diversity must be between 0 and 1"),
        ({"liked": ["fmnist-test-0"], "k": 0}, "k must be between 1 and 1000"),
        ({"liked": [f"p{i}" for i in range(101)]}, "at most 100 products"),
    ],
)
def test_bad_requests_are_refused_with_their_reason(catalog_db, kwargs, message):
    with Catalog.open(catalog_db) as cat, pytest.raises(InvalidRequest, match=message):
        cat.recommend(**kwargs)


def test_an_unknown_liked_or_disliked_product_is_named(catalog_db):
    with Catalog.open(catalog_db) as cat:
        with pytest.raises(ProductNotFound, match="sku-404"):
            cat.recommend(["fmnist-test-0", "sku-404"])
        with pytest.raises(ProductNotFound, match="sku-405"):
            cat.recommend(["fmnist-test-0"], disliked=["sku-405"])


def test_both_backends_recommend_alike(db_url, by_category):
    with Catalog.open(db_url) as cat:
        cat.index("fashion-mnist:test", model="pixels", limit=200, progress=False)
        liked = [p for p in by_category["Trouser"] if int(p.rsplit("-", 1)[1]) < 200][:2]
        hits = cat.recommend(liked, k=5, disliked=["fmnist-test-0"])
    assert len(hits) == 5 and sum(h.category == "Trouser" for h in hits) >= 4


def test_cli_recommend(catalog_db, by_category):
    liked = by_category["Dress"][:2]
    runner = CliRunner()
    args = ["recommend", *liked, "--not", by_category["Coat"][0], "-k", "4", "--db", catalog_db]
    result = runner.invoke(app, [*args, "--json"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.output)
    assert doc["query"] == f"liked: {liked[0]}, {liked[1]}" and doc["model"] == "default"
    assert len(doc["results"]) == 4 and not set(liked) & {r["product_id"] for r in doc["results"]}
    table = runner.invoke(app, [*args, "--method", "centroid"])
    assert table.exit_code == 0 and doc["results"][0]["category"] in table.output
    bad = subprocess.run(
        [sys.executable, "-m", "lookalike.cli", "recommend", liked[0], "sku-404", "--db", catalog_db],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert bad.returncode == 1 and bad.stderr.strip() == "error: product 'sku-404' not found", bad.stderr
    usage = runner.invoke(app, ["recommend", liked[0], "--method", "mean", "--db", catalog_db])
    assert usage.exit_code == 2 and "'mean' is not one of" in usage.output


def test_api_recommendations(catalog_db, by_category):
    liked = by_category["Bag"][:2]
    with TestClient(create_app(Settings(), db=catalog_db)) as client:
        r = client.post("/v1/recommendations", json={"liked": liked, "k": 5, "diversity": 0.2})
        assert r.status_code == 200, r.text
        doc = r.json()
        assert doc["model"] == "default" and len(doc["results"]) == 5
        assert all(h["thumbnail_url"] == f"/v1/images/{h['image_id']}" for h in doc["results"])
        assert not set(liked) & {h["product_id"] for h in doc["results"]}
        with Catalog.open(catalog_db) as cat:
            same = cat.recommend(liked, k=5, diversity=0.2)
        assert [h["product_id"] for h in doc["results"]] == [h.product_id for h in same]

        missing = client.post("/v1/recommendations", json={"liked": [liked[0], "sku-404"]})
        assert missing.status_code == 404 and "sku-404" in missing.json()["error"]["message"]
        for body, where in [
            ({"liked": []}, "liked"),
            ({"liked": liked, "method": "mean"}, "method"),
            (
                {"liked": ["../etc/passwd"]},
                "liked.0: '../etc/passwd' is not a valid product id (1-128 letters",
            ),
            ({"liked": liked, "k": 101}, "k"),
            ({"liked": liked, "surprise": 1}, "surprise"),
            ({"liked": [f"fmnist-test-{i}" for i in range(21)]}, "liked"),
        ]:
            bad = client.post("/v1/recommendations", json=body)
            assert bad.status_code == 422 and where in bad.json()["error"]["message"], (body, bad.text)
        both = client.post("/v1/recommendations", json={"liked": liked, "disliked": liked[:1]})
        assert both.status_code == 422 and "both liked and disliked" in both.json()["error"]["message"]
        form = client.post("/v1/recommendations", data={"liked": liked[0]})
        assert form.status_code == 415
