"""Latent explorer on a real SQLite catalog of Fashion-MNIST products indexed with a real (tiny) VAE."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from PIL import Image

from lookalike.catalog import Catalog
from lookalike.errors import InvalidRequest, ModelError, ProductNotFound, SourceError
from lookalike.explore import (
    LatentSpace,
    catalog_map,
    cluster_catalog,
    contact_sheets,
    export_csv,
    import_labels,
    impute,
    interpolate,
    latent_arithmetic,
    parse_expression,
    save_map_html,
    save_map_png,
    slerp,
    traverse,
)
from lookalike.explore.interpolate import save_interpolation
from lookalike.explore.traverse import save_traversal
from lookalike.train.vae import VAETrainConfig, train_vae

N_PRODUCTS = 300
FOOTWEAR = {"Sandal", "Sneaker", "Ankle boot"}


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """Small models on a shared 2-core machine: one torch thread avoids spin-waiting on busy cores."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def vae_path(tmp_path_factory):
    from lookalike.datasets.fashion_mnist import load_split

    images, _ = load_split("train")
    out = tmp_path_factory.mktemp("vae")
    config = VAETrainConfig(model="vae", latent_dim=8, channels=(8, 16), hidden=128, epochs=4, batch_size=64,
                            lr=3e-3, threads=1)  # fmt: skip
    return train_vae(images[:2000], out, config, progress=False).checkpoint


@pytest.fixture(scope="module")
def catalog_db(tmp_path_factory, vae_path):
    """A real SQLite catalog: the first 300 Fashion-MNIST test items, indexed with the VAE."""
    base = tmp_path_factory.mktemp("catalog")
    db = base / "catalog.db"
    with Catalog.open(db) as cat:
        report = cat.index("fashion-mnist:test", model=f"vae:{vae_path}", limit=N_PRODUCTS,
                           report_path=base / "report.json", progress=False)  # fmt: skip
        assert report.products_indexed == N_PRODUCTS
    return db


@pytest.fixture
def cat(catalog_db):
    with Catalog.open(catalog_db) as c:
        yield c


@pytest.fixture
def space(cat):
    return LatentSpace(cat)


def _mse(a: Image.Image, b: Image.Image) -> float:
    x = np.asarray(a.convert("L"), dtype=np.float32) / 255
    y = np.asarray(b.convert("L").resize(a.size), dtype=np.float32) / 255
    return float(((x - y) ** 2).mean())


# -- interpolation -----------------------------------------------------------------------------------
@pytest.mark.parametrize("method", ["linear", "spherical"])
def test_interpolation_endpoints_decode_close_to_a_and_b(space, method):
    a, b = "fmnist-test-0", "fmnist-test-1"  # an ankle boot and a pullover
    r = interpolate(space, a, b, steps=6, method=method)
    img_a, img_b = space.product_image(a), space.product_image(b)
    assert len(r.decoded) == 6 and r.ts[0] == 0.0 and r.ts[-1] == 1.0
    assert _mse(r.decoded[0], img_a) < 0.08 and _mse(r.decoded[-1], img_b) < 0.08
    assert _mse(r.decoded[0], img_a) < _mse(r.decoded[0], img_b) / 3
    assert _mse(r.decoded[-1], img_b) < _mse(r.decoded[-1], img_a) / 3
    # the points at the ends are the products themselves
    assert r.nearest[0].product_id == a and r.nearest[-1].product_id == b
    assert r.nearest[0].score == pytest.approx(1.0, abs=1e-4)


def test_nearest_products_are_real_catalog_ids(space, cat, tmp_path):
    ids, _ = cat.product_vectors()
    r = interpolate(space, "fmnist-test-5", "fmnist-test-9", steps=8)
    assert {m.product_id for m in r.nearest} <= set(ids)
    png, js = save_interpolation(space, [r], tmp_path / "strip")
    with Image.open(png) as img:
        assert img.width > 8 * 56
    doc = json.loads(js.read_text())
    points = doc["paths"][0]["points"]
    assert [p["nearest"]["product_id"] for p in points] == [m.product_id for m in r.nearest]


def test_slerp_keeps_the_norm_where_lerp_shrinks_it():
    a, b = np.array([3.0, 0.0]), np.array([0.0, 3.0])
    mid = slerp(a, b, np.array([0.0, 0.5, 1.0]))
    assert np.allclose(mid[0], a) and np.allclose(mid[2], b)
    assert np.linalg.norm(mid[1]) == pytest.approx(3.0)
    assert np.linalg.norm((a + b) / 2) < 2.2


def test_interpolation_refuses_bad_input(space):
    with pytest.raises(ProductNotFound):
        interpolate(space, "fmnist-test-0", "no-such-product")
    with pytest.raises(InvalidRequest, match="steps"):
        interpolate(space, "fmnist-test-0", "fmnist-test-1", steps=1)
    with pytest.raises(InvalidRequest, match="unknown interpolation"):
        interpolate(space, "fmnist-test-0", "fmnist-test-1", method="cubic")


def test_decoding_commands_need_a_vae(cat):
    pixels = LatentSpace(cat, "pixels")
    with pytest.raises(ModelError, match="needs a VAE"):
        interpolate(pixels, "fmnist-test-0", "fmnist-test-1")
    with pytest.raises(ModelError, match="needs a VAE"):
        traverse(pixels, "fmnist-test-0")
    with pytest.raises(ModelError, match="needs a VAE"):
        latent_arithmetic(pixels, "fmnist-test-0 + fmnist-test-1")


def test_vae_explore_on_a_catalog_indexed_with_another_model(vae_path, tmp_path):
    """No VAE vectors in the catalog: products are embedded from their stored thumbnails on the fly."""
    with Catalog.open(tmp_path / "pixels.db") as other:
        other.index("fashion-mnist:test", model="pixels", limit=60, report_path=tmp_path / "r.json",
                    progress=False)  # fmt: skip
        space = LatentSpace(other, f"vae:{vae_path}")
        t = traverse(space, "fmnist-test-0", steps=3, top=2)
        assert len(t.rows) == 2 and not space.embedded_on_the_fly  # ranking needs ids only
        r = interpolate(space, "fmnist-test-0", "fmnist-test-1", steps=4)
        assert space.embedded_on_the_fly
        assert r.nearest[0].product_id == "fmnist-test-0" and r.nearest[-1].product_id == "fmnist-test-1"


# -- traversal / arithmetic --------------------------------------------------------------------------
def test_traversal_grid_ranks_dimensions_by_effect(space, tmp_path):
    t = traverse(space, "fmnist-test-3", steps=5, top=4)
    assert len(t.rows) == 4 and all(len(row) == 5 for row in t.rows)
    effects = [r.effect for r in t.ranks]
    assert effects == sorted(effects, reverse=True) and effects[0] > 0.01
    assert all(r.kl is not None for r in t.ranks)
    # the strongest dimension really changes the picture end to end
    assert _mse(t.rows[0][0], t.rows[0][-1]) > 0.001
    picked = traverse(space, "fmnist-test-3", dims=[2, 0], steps=3)
    assert [r.dim for r in picked.ranks] == [2, 0]
    png, _ = save_traversal(space, picked, tmp_path / "grid")
    assert png.is_file()
    with pytest.raises(InvalidRequest, match="out of range"):
        traverse(space, "fmnist-test-3", dims=[99])


def test_parse_expression():
    assert parse_expression("fmnist-test-1 + fmnist-test-2 - fmnist-test-3") == [
        (1, "fmnist-test-1"),
        (1, "fmnist-test-2"),
        (-1, "fmnist-test-3"),
    ]
    assert parse_expression("- a + b") == [(-1, "a"), (1, "b")]
    for bad in ["", "a +", "a + b c"]:
        with pytest.raises(InvalidRequest):
            parse_expression(bad)


def test_arithmetic_decodes_and_returns_real_products_other_than_the_operands(space, cat):
    ids, _ = cat.product_vectors()
    r = latent_arithmetic(space, "fmnist-test-0 + fmnist-test-1 - fmnist-test-2", k=4)
    assert len(r.nearest) == 4
    found = {m.product_id for m in r.nearest}
    assert found <= set(ids) and not found & {"fmnist-test-0", "fmnist-test-1", "fmnist-test-2"}
    # A + B - B is A again
    z = space.latents(["fmnist-test-0", "fmnist-test-1"])
    same = latent_arithmetic(space, "fmnist-test-0 + fmnist-test-1 - fmnist-test-1", k=1)
    assert np.allclose(same.latent, z[0], atol=1e-5)


# -- maps --------------------------------------------------------------------------------------------
def test_tsne_map_png_and_self_contained_html(space, tmp_path):
    m = catalog_map(space, method="tsne", limit=120)
    assert m.coords.shape == (120, 2) and len(set(m.categories)) > 3
    png = save_map_png(m, tmp_path / "map.png")
    with Image.open(png) as img:
        assert img.width > 300
    page = save_map_html(space, m, tmp_path / "map.html").read_text()
    assert page.count("data:image/png;base64,") == 1  # the template prefix, thumbnails are inline strings
    assert m.product_ids[0] in page and '"t":"iVBOR' in page  # base64 PNG thumbnails inline
    assert "<script src" not in page and "http" not in page.replace("http-equiv", "")


@pytest.mark.slow
def test_umap_map(space, tmp_path):
    """UMAP compiles with numba on first use (tens of seconds), hence slow."""
    m = catalog_map(space, method="umap", limit=150)
    assert m.coords.shape == (150, 2) and np.isfinite(m.coords).all()
    assert save_map_png(m, tmp_path / "umap.png").is_file()
    with pytest.raises(InvalidRequest, match="unknown map method"):
        catalog_map(space, method="pca")


def test_map_works_with_any_embedder_embedding_on_the_fly(cat):
    space = LatentSpace(cat, "pixels")
    m = catalog_map(space, method="tsne", limit=60)
    assert space.embedded_on_the_fly and space.vectors()[1].shape == (N_PRODUCTS, 1024)
    assert m.coords.shape == (60, 2)


# -- clusters / bulk annotation ----------------------------------------------------------------------
def test_cluster_csv_round_trip_writes_labels_back(space, cat, tmp_path):
    c = cluster_catalog(space, k=4)
    assert sum(c.sizes()) == N_PRODUCTS
    path = export_csv(c, tmp_path / "clusters.csv")
    with path.open() as f:
        rows = list(csv.DictReader(f))
    assert {r["product_id"] for r in rows} == set(c.product_ids) and len(rows) == N_PRODUCTS
    for cl in range(4):
        d = [float(r["distance"]) for r in rows if r["cluster"] == str(cl)]
        assert d == sorted(d)
    # annotate: cluster 0 once on its first row, one row of cluster 1 individually
    first0 = next(r for r in rows if r["cluster"] == "0")
    first0["label"] = "group zero"
    one1 = next(r for r in rows if r["cluster"] == "1")
    one1["label"] = "odd one"
    unknown = {"cluster": "1", "product_id": "not-in-catalog", "distance": "0", "category": "", "label": "x"}
    rows.append(unknown)
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    report = import_labels(cat, path, attribute="look")
    n0, n1 = c.sizes()[0], c.sizes()[1]
    assert report.unknown_products == ["not-in-catalog"]
    assert report.labelled_rows == 3
    # cluster 1 had two different labels: no propagation there
    assert report.updated == n0 + 1 and report.propagated == n0 - 1
    products = cat.get_products(c.product_ids)
    zero = [p for p, cl in zip(c.product_ids, c.labels, strict=True) if cl == 0]
    assert all(products[p].attributes.get("look") == "group zero" for p in zero)
    assert products[one1["product_id"]].attributes["look"] == "odd one"
    assert len(cat.store.matching_product_pks({"look": "group zero"})) == n0
    assert n1 >= 1


def test_cluster_import_refuses_bad_files(cat, tmp_path):
    with pytest.raises(SourceError, match="not found"):
        import_labels(cat, tmp_path / "missing.csv")
    bad = tmp_path / "bad.csv"
    bad.write_text("cluster,product\n0,x\n")
    with pytest.raises(SourceError, match="missing column"):
        import_labels(cat, bad)


def test_contact_sheet_per_cluster(space, tmp_path):
    c = cluster_catalog(space, k=3)
    sheets = contact_sheets(space, c, tmp_path, per_sheet=12, cols=6)
    assert [p.name for p in sheets] == ["cluster-000.png", "cluster-001.png", "cluster-002.png"]
    with Image.open(sheets[0]) as img:
        assert img.width >= 6 * 48


# -- imputation --------------------------------------------------------------------------------------
def test_imputation_recovers_a_synthetic_attribute(space, cat):
    ids, _ = space.vectors()
    products = cat.get_products(ids)
    truth = {p: ("footwear" if products[p].category in FOOTWEAR else "clothing") for p in ids}
    rng = np.random.default_rng(0)
    hidden = set(rng.choice(ids, size=90, replace=False).tolist())
    cat.set_attributes({p: {"kind": v} for p, v in truth.items() if p not in hidden})
    report = impute(LatentSpace(cat), "kind", k=5, holdout=0.25, write=True)
    assert report.labelled == N_PRODUCTS - 90 and report.missing == 90
    assert report.holdout_accuracy > 0.9 and report.holdout_accuracy > report.majority_baseline
    right = np.mean([truth[p.product_id] == p.value for p in report.predictions])
    assert right > 0.9
    assert report.written == 90
    after = cat.get_products(hidden)
    assert all(after[p].attributes["kind_imputed"] == "knn" for p in hidden)


def test_imputation_with_another_embedder_and_bad_input(cat):
    r = impute(LatentSpace(cat, "pixels"), "category", k=3, holdout=0.3)
    assert r.missing == 0 and r.holdout_accuracy > 0.5
    with pytest.raises(InvalidRequest, match="need at least 2"):
        impute(LatentSpace(cat), "no_such_attribute")


# -- CLI ---------------------------------------------------------------------------------------------
def test_explore_cli(catalog_db, tmp_path):
    from typer.testing import CliRunner

    from lookalike.cli import app

    runner = CliRunner()
    db = ["--db", str(catalog_db)]
    r = runner.invoke(app, ["explore", "interpolate", "fmnist-test-0", "fmnist-test-1", "--steps", "4",
                            "--out", str(tmp_path), "--json", *db])  # fmt: skip
    assert r.exit_code == 0, r.output
    doc = json.loads(r.output)
    assert [p["method"] for p in doc["paths"]] == ["linear", "spherical"]
    assert (tmp_path / "interpolate-fmnist-test-0-fmnist-test-1.png").is_file()
    r = runner.invoke(app, ["explore", "clusters", "--k", "3", "--out", str(tmp_path / "cl"), *db])
    assert r.exit_code == 0, r.output
    csv_path = tmp_path / "cl" / "clusters.csv"
    lines = csv_path.read_text().splitlines()
    lines[1] = lines[1] + "hand label"  # the label column is last
    csv_path.write_text("\n".join(lines) + "\n")
    r = runner.invoke(app, ["explore", "clusters", "import", str(csv_path), "--json", *db])
    assert r.exit_code == 0, r.output
    assert json.loads(r.output)["labelled_rows"] == 1
    r = runner.invoke(app, ["explore", "traverse", "fmnist-test-0", "--model", "pixels", *db])
    assert isinstance(r.exception, ModelError)
    r = runner.invoke(app, ["explore", "map", "--limit", "60", "--out", str(tmp_path / "m"), *db])
    assert r.exit_code == 0, r.output
    assert (tmp_path / "m" / "map-tsne.png").is_file() and (tmp_path / "m" / "map-tsne.html").is_file()
    r = runner.invoke(app, ["explore", "impute", "category", "--out", str(tmp_path / "p.csv"), "--json", *db])
    assert r.exit_code == 0, r.output
    assert json.loads(r.output)["holdout"] == 60
    expr = "fmnist-test-0 + fmnist-test-1"
    r = runner.invoke(app, ["explore", "arithmetic", expr, "--out", str(tmp_path), *db])
    assert r.exit_code == 0 and (tmp_path / "arithmetic.png").is_file()
