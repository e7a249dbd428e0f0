"""Listing products a page at a time: ``Catalog.list_products`` and ``GET /v1/products``, on every
store backend (``db_url``), over a real catalog of Fashion-MNIST items indexed with the pixels model."""

from __future__ import annotations

import base64
import json
from collections import Counter

import pytest
from api_support import index_small_catalog
from fastapi.testclient import TestClient

from lookalike.api.app import create_app
from lookalike.catalog import Catalog
from lookalike.config import Settings
from lookalike.datasets.fashion_mnist import CLASSES
from lookalike.errors import InvalidRequest

N = 40
KEY = "test-key-0123456789abcdef"


@pytest.fixture
def indexed_db(db_url) -> str:
    return index_small_catalog(db_url, n=N)


@pytest.fixture
def client(indexed_db):
    with TestClient(create_app(Settings(), db=indexed_db), raise_server_exceptions=False) as client:
        yield client


def all_pages(get_page) -> list[list[str]]:
    """Follow next_cursor from the first page to the last; the ids of each page."""
    pages, cursor = [], None
    while True:
        ids, cursor = get_page(cursor)
        pages.append(ids)
        if cursor is None:
            return pages
        assert len(pages) <= N, "paging does not end"


def assert_error(response, status: int, code: str) -> str:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"} and body["error"]["code"] == code, body
    return body["error"]["message"]


# --- the library -------------------------------------------------------------------------------
def catalog_pages(cat: Catalog, limit: int, category: str | None = None) -> list[list[str]]:
    def page(cursor):
        p = cat.list_products(limit, cursor=cursor, category=category)
        assert category is None or {r.category for r in p.products} <= {category}
        return [r.product_id for r in p.products], p.next_cursor

    return all_pages(page)


def test_catalog_pages_through_every_product_once_in_the_order_added(indexed_db, fmnist_test):
    with Catalog.open(indexed_db) as cat:
        pages = catalog_pages(cat, 7)
        assert [len(p) for p in pages] == [7, 7, 7, 7, 7, 5]  # the last page is short, none is empty
        assert sum(pages, []) == [f"fmnist-test-{i}" for i in range(N)]
        # an exact multiple: the last full page says there is no next one
        assert [len(p) for p in catalog_pages(cat, 10)] == [10, 10, 10, 10]

        first = cat.list_products(3).products[0]
        assert first.category == CLASSES[fmnist_test[1][0]] and first.image_ids and first.title


def test_catalog_category_filter_and_paging_stay_consistent_under_writes(indexed_db, fmnist_test):
    labels = fmnist_test[1][:N]
    with Catalog.open(indexed_db) as cat:
        for name in ("Bag", "Sneaker"):
            expected = [f"fmnist-test-{i}" for i in range(N) if CLASSES[labels[i]] == name]
            assert expected, name
            assert sum(catalog_pages(cat, 2, category=name), []) == expected
        assert cat.list_products(5, category="No such category").products == []

        # the product a cursor points after is deleted, and another is added: paging goes on
        first = cat.list_products(5)
        cat.delete(first.products[-1].product_id)
        cat.index_products([_product("late-arrival", fmnist_test[0][N])])
        rest, cursor = [], first.next_cursor
        while cursor:
            p = cat.list_products(5, cursor=cursor)
            rest += [r.product_id for r in p.products]
            cursor = p.next_cursor
        assert rest == [f"fmnist-test-{i}" for i in range(5, N)] + ["late-arrival"]


def _product(pid, arr):
    from PIL import Image

    from lookalike.sources import SourceProduct

    return SourceProduct(pid, [Image.fromarray(arr)], title="late", category="Bag")


def test_catalog_refuses_bad_limits_and_cursors(indexed_db):
    with Catalog.open(indexed_db) as cat:
        for limit in (0, -3):
            with pytest.raises(InvalidRequest, match="limit"):
                cat.list_products(limit)
        for cursor in ("nonsense", "fmnist-test-3", base64.urlsafe_b64encode(b"before:3").decode(), "!!"):
            with pytest.raises(InvalidRequest, match="cursor"):
                cat.list_products(5, cursor=cursor)


# --- the API ----------------------------------------------------------------------------------
def test_api_pages_through_every_product_once(client, fmnist_test):
    def page(cursor):
        params = {"limit": 9} | ({"cursor": cursor} if cursor else {})
        r = client.get("/v1/products", params=params)
        assert r.status_code == 200, r.text
        doc = r.json()
        assert set(doc) == {"data", "count", "next_cursor"} and doc["count"] == len(doc["data"])
        return [p["product_id"] for p in doc["data"]], doc["next_cursor"]

    pages = all_pages(page)
    assert [len(p) for p in pages] == [9, 9, 9, 9, 4]
    assert sum(pages, []) == [f"fmnist-test-{i}" for i in range(N)]

    doc = client.get("/v1/products").json()  # default limit 50 > N: one page
    assert doc["count"] == N and doc["next_cursor"] is None
    first = doc["data"][0]
    assert first == client.get("/v1/products/fmnist-test-0").json()  # the same document as GET one
    assert first["thumbnail_urls"] == [f"/v1/images/{i}" for i in first["image_ids"]]
    assert client.get(first["thumbnail_urls"][0]).status_code == 200


def test_api_category_filter(client, fmnist_test):
    counts = client.get("/v1/stats").json()["categories"]
    assert sum(counts.values()) == N
    for name, count in counts.items():
        r = client.get("/v1/products", params={"category": name, "limit": 500})
        assert r.status_code == 200, r.text
        doc = r.json()
        assert doc["count"] == count and doc["next_cursor"] is None
        assert Counter(p["category"] for p in doc["data"]) == {name: count}
    doc = client.get("/v1/products", params={"category": "Spaceship"}).json()
    assert doc == {"data": [], "count": 0, "next_cursor": None}


def test_api_bad_parameters_are_422_naming_the_parameter(client):
    for params, name in [
        ({"limit": 0}, "limit"),
        ({"limit": 501}, "limit"),
        ({"limit": "ten"}, "limit"),
        ({"cursor": "not-a-cursor"}, "cursor"),
        ({"cursor": base64.urlsafe_b64encode(b"after:x").decode()}, "cursor"),
        ({"cursor": "x" * 201}, "cursor"),
        ({"category": "c" * 201}, "category"),
    ]:
        message = assert_error(client.get("/v1/products", params=params), 422, "invalid_request")
        assert message.startswith(name), (params, message)
    assert client.get("/v1/products", params={"limit": 500}).status_code == 200


def test_api_listing_follows_read_protection(indexed_db):
    app = create_app(Settings(api_key=KEY, protect_reads=True), db=indexed_db)
    with TestClient(app, raise_server_exceptions=False) as client:
        assert_error(client.get("/v1/products"), 401, "missing_api_key")
        assert_error(client.get("/v1/products", headers={"X-API-Key": "wrong"}), 403, "invalid_api_key")
        r = client.get("/v1/products", params={"limit": 3}, headers={"X-API-Key": KEY})
        assert r.status_code == 200 and r.json()["count"] == 3


# --- the CLI ----------------------------------------------------------------------------------
def test_cli_lists_a_page_and_points_to_the_next(tmp_path):
    from typer.testing import CliRunner

    from lookalike.cli import app

    db = index_small_catalog(str(tmp_path / "cli.db"), n=12)
    runner = CliRunner()
    doc = json.loads(runner.invoke(app, ["products", "--db", db, "-n", "5", "--json"]).stdout)
    assert [p["product_id"] for p in doc["products"]] == [f"fmnist-test-{i}" for i in range(5)]
    out = runner.invoke(app, ["products", "--db", db, "-n", "5", "--cursor", doc["next_cursor"]])
    assert out.exit_code == 0, out.output
    assert "fmnist-test-5" in out.output and "fmnist-test-4 " not in out.output
    assert "--cursor" in out.output  # a third page follows
    out = runner.invoke(app, ["products", "--db", db, "--cursor", "bogus"])
    assert out.exit_code != 0 and "cursor" in str(out.exception)


def test_api_empty_catalog_and_the_openapi_document(tmp_path):
    with TestClient(create_app(Settings(), db=str(tmp_path / "empty.db"))) as client:
        assert client.get("/v1/products").json() == {"data": [], "count": 0, "next_cursor": None}
        spec = client.get("/openapi.json").json()
    op = spec["paths"]["/v1/products"]["get"]
    assert {p["name"] for p in op["parameters"]} == {"limit", "cursor", "category"}
    assert op["responses"]["200"]["content"]["application/json"]["schema"]["$ref"].endswith("/ProductsPublic")
