"""Re-ranking (lookalike.rerank): the alignment score on hand-made photos, the learned verifier
(lookalike.verifier: training, round trip, what the shipped one knows), the re-ordering rule, the
evaluation hook with the real default model, and the catalog / CLI paths."""

from __future__ import annotations

import io
import json
import os

import numpy as np
import pytest
import torch
from PIL import Image

from lookalike.errors import InvalidRequest
from lookalike.rerank import Reranker


def _photo(item: np.ndarray, *, dark: bool = False, angle: float = 6.0) -> tuple[Image.Image, tuple]:
    """A 110×90 colour photo: the item at 2× on a colour gradient, rotated, tinted red; ``dark``
    draws it dark on the light background instead. Returns the photo and the item's true box."""
    a = np.asarray(
        Image.fromarray(item)
        .resize((56, 56), Image.Resampling.BICUBIC)
        .rotate(angle, resample=Image.Resampling.BILINEAR),
        dtype=np.float64,
    )
    a /= 255.0
    h, w = 90, 110
    yy, xx = np.mgrid[0:h, 0:w] / 100.0
    out = np.stack([0.3 + 0.3 * xx, 0.4 + 0.1 * yy, 0.5 - 0.2 * xx], axis=-1)
    tint = np.array([0.9, 0.3, 0.2])
    alpha = np.clip(a * 2, 0, 1)[..., None]
    colour = 1 - tint * a[..., None] if dark else tint * a[..., None]
    y0, x0 = 20, 30
    patch = out[y0 : y0 + 56, x0 : x0 + 56]
    out[y0 : y0 + 56, x0 : x0 + 56] = patch * (1 - alpha) + colour * alpha
    photo = Image.fromarray((np.clip(out, 0, 1) * 255).astype(np.uint8))
    return photo, (x0 + 29.5, y0 + 26.0, 56.0, angle)  # box slightly off, as a localizer's is


@pytest.fixture(scope="module")
def candidates():
    from lookalike.datasets.fashion_mnist import load_split

    return list(load_split("test")[0][:200])


@pytest.mark.parametrize("dark", [False, True])
@pytest.mark.parametrize("item", [7, 42, 150])
def test_the_photographed_item_aligns_best_among_200(candidates, item, dark):
    rr = Reranker(verifier=None)
    templates = rr.templates(candidates)
    photo, box = _photo(candidates[item], dark=dark)
    align = rr.alignment(rr.views(photo, box), templates)
    assert align.shape == (200,) and np.all((align >= 0) & (align <= 1))
    assert int(np.argmax(align)) == item
    # the box matters: the whole 110×90 frame, mostly background, aligns far worse
    whole = rr.alignment(rr.views(photo, None), templates)
    assert align[item] > whole[item] + 0.2


def test_alignment_ignores_colour_polarity_brightness_and_contrast(candidates):
    rr = Reranker(verifier=None)
    templates = rr.templates(candidates[:20])
    photo, box = _photo(candidates[3])
    base = rr.alignment(rr.views(photo, box), templates)
    arr = np.asarray(photo, dtype=np.float64)
    for changed in (255 - arr, arr * 0.5 + 40, arr[..., ::-1]):
        other = Image.fromarray(np.clip(changed, 0, 255).astype(np.uint8))
        np.testing.assert_allclose(rr.alignment(rr.views(other, box), templates), base, atol=0.02)


@pytest.mark.parametrize("item", [7, 42, 150])
def test_alignment_takes_out_uneven_lighting(candidates, item):
    """A photo lit unevenly (a light field that is a smooth polynomial across the frame, from 0.15
    to about 1.7×): with the smooth field taken out (``background=4``, the default), the true item
    stays first among 200 and keeps its R²; comparing the raw crops (``background=0``) loses most
    of its R² to the light field."""
    photo, box = _photo(candidates[item])
    arr = np.asarray(photo, dtype=np.float64)
    yy, xx = np.mgrid[0 : arr.shape[0], 0 : arr.shape[1]]
    u, v = (xx - 58.0) / 40, (yy - 48.0) / 40
    light = np.clip(0.75 + 0.45 * u - 0.25 * v + 0.2 * u * v - 0.15 * u * u, 0.15, 2.0)
    lit = Image.fromarray(np.clip(arr * light[..., None], 0, 255).astype(np.uint8))
    r2 = {}
    for degree in (0, 4):
        rr = Reranker(verifier=None, background=degree)
        templates = rr.templates(candidates)
        r2[degree] = [rr.alignment(rr.views(p, box), templates) for p in (photo, lit)]
    even, uneven = r2[4]
    assert int(np.argmax(uneven)) == item
    assert abs(uneven[item] - even[item]) < 0.1
    assert r2[0][1][item] < r2[0][0][item] - 0.3


def test_the_smooth_fields_are_an_orthonormal_zero_mean_basis():
    for degree, count in ((0, 0), (1, 2), (2, 5), (4, 14)):
        basis = Reranker(verifier=None, background=degree, size=20).smooth_fields().double()
        assert basis.shape == (count, 400)
        if count:
            np.testing.assert_allclose(basis @ basis.T, np.eye(count), atol=1e-5)
            np.testing.assert_allclose(basis.sum(dim=1), 0.0, atol=1e-4)
    # degree 1 spans the two linear ramps: a ramp is taken out whole, a checkerboard is not
    rr = Reranker(verifier=None, background=1, size=20)
    yy, xx = np.mgrid[0:20, 0:20]
    ramp = torch.tensor((0.3 * xx - 0.7 * yy).reshape(1, -1), dtype=torch.float32)
    check = torch.tensor(((xx + yy) % 2).reshape(1, -1) - 0.5, dtype=torch.float32)
    assert float(rr._without_field(ramp - ramp.mean()).abs().max()) < 1e-4
    assert float(rr._without_field(check).norm()) > 0.99 * float(check.norm())


def test_rerank_orders_the_head_by_similarity_plus_alignment(candidates):
    photo, box = _photo(candidates[42])
    sims = np.linspace(0.6, 0.59, 30)  # the true item (row 42, at position 25) starts far down
    rows = [(i + 17) % 200 for i in range(30)]
    rows[25] = 42
    cands = [candidates[r] for r in rows]
    rr = Reranker(depth=30, weight=1.0, verifier=None)
    order, scores = rr.rerank(photo, cands, sims, box)
    align = scores["alignment"]
    assert set(scores) == {"alignment"}
    assert sorted(order.tolist()) == list(range(30))
    fused = sims[order] + align[order]
    assert np.all(np.diff(fused) <= 1e-12)
    assert rows[order[0]] == 42
    # weight 0 keeps the first-stage order; rows past the short-list keep their places, unaligned
    order0, _ = Reranker(depth=30, weight=0.0, verifier=None).rerank(photo, cands, sims, box)
    assert order0.tolist() == list(range(30))
    order10, scores10 = Reranker(depth=10, shortlist=10, verifier=None).rerank(photo, cands, sims, box)
    assert order10[10:].tolist() == list(range(10, 30)) and np.isnan(scores10["alignment"][10:]).all()
    assert sorted(order10[:10].tolist()) == list(range(10))


def test_alignment_screens_a_longer_list_than_the_verifier_checks(candidates):
    """depth 5, short-list 30: the true item at place 25 is aligned, brought into the verified five
    and checked there; the rest of the short-list follows by similarity + alignment, unverified."""
    photo, box = _photo(candidates[42])
    sims = np.linspace(0.6, 0.59, 40)
    rows = [(i + 17) % 200 for i in range(40)]
    rows[25] = 42
    cands = [candidates[r] for r in rows]
    rr = Reranker(depth=5, shortlist=30)
    assert rr.reach == 30 and Reranker(depth=100).reach == 300 and Reranker(depth=500).reach == 1000
    order, scores = rr.rerank(photo, cands, sims, box)
    assert sorted(order.tolist()) == list(range(40)) and order[30:].tolist() == list(range(30, 40))
    align, ver = scores["alignment"], scores["verifier"]
    assert np.isfinite(align[:30]).all() and np.isnan(align[30:]).all()
    head = order[:5]
    assert np.isfinite(ver[head]).all() and np.isnan(np.delete(ver, head)).all()
    assert rows[order[0]] == 42
    # the verified five are those with the best similarity + alignment, in the fused order
    stage1 = sims[:30] + rr.weight * align[:30]
    assert set(head.tolist()) == set(np.argsort(-stage1)[:5].tolist())
    fused = stage1[head] + rr.verifier_weight * ver[head]
    assert np.all(np.diff(fused) <= 1e-12)
    rest = order[5:30]
    assert np.all(np.diff(stage1[rest]) <= 1e-12)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"depth": 0}, "depth must be between 1"),
        ({"depth": 5000}, "depth must be between 1"),
        ({"depth": 50, "shortlist": 20}, "shortlist must be between depth"),
        ({"shortlist": 1001}, "shortlist must be between depth"),
        ({"weight": -1.0}, "weight must be a finite number"),
        ({"weight": float("nan")}, "weight must be a finite number"),
        ({"size": 4}, "size must be between 8"),
        ({"margin": 0.5}, "margin must be at least 1.0"),
        ({"background": -1}, "background degree must be between 0 and 8"),
        ({"background": 9}, "background degree must be between 0 and 8"),
        ({"verifier_weight": -0.1}, "verifier weight must be a finite number"),
        ({"verifier_precision": "fp16"}, "verifier precision must be one of fp32, bf16"),
    ],
)
def test_bad_settings_are_refused_by_name(kwargs, message):
    with pytest.raises(InvalidRequest, match=message):
        Reranker(**kwargs)


def test_a_missing_or_wrong_verifier_file_is_refused_by_name(tmp_path):
    from lookalike.errors import ModelError

    with pytest.raises(ModelError, match="checkpoint /nonexistent/v.pt not found"):
        Reranker(verifier="/nonexistent/v.pt")
    from lookalike.embedders import load_embedder

    default_model = load_embedder("default").path  # a metric checkpoint, not a verifier
    with pytest.raises(ModelError, match="is a 'metric' checkpoint, not 'verifier'"):
        Reranker(verifier=default_model)


def test_rerank_lifts_street_to_shop_recall_of_the_default_model():
    """The real default model, real street views, 2,000 distractors: re-ranking the first 100 by
    alignment finds the exact product first more often, and the shipped verifier on top of it more
    often still (measured: 10k queries against 70k in BENCHMARKS.md)."""
    from lookalike.evaluation import evaluate
    from lookalike.evaluation.datasets import street_to_shop

    q, g = street_to_shop(n_queries=200, seed=3, distractors=2000)
    rerankers = {"align": Reranker(depth=100, verifier=None), "rerank": Reranker(depth=100)}
    res = evaluate(["default"], q, g, protocol="street-to-shop", rerank=rerankers)
    plain = res.results["default"]["full"]["instance"]
    aligned = res.results["default +align"]["full"]["instance"]
    better = res.results["default +rerank"]["full"]["instance"]
    assert aligned["R@1"] > plain["R@1"] + 0.03
    assert better["R@1"] > aligned["R@1"] + 0.03
    assert better["R@20"] >= aligned["R@20"] >= plain["R@20"]
    # the clean subset is scored from the same re-ranked lists
    assert res.results["default +rerank"]["clean"]["instance"]["R@1"] >= 0
    assert res.neighbours["default +rerank"].shape == res.neighbours["default"].shape


def test_catalog_search_with_rerank(db_url, fmnist_test):
    """Re-ranking in the catalog reads the stored thumbnails: each verified hit carries its
    alignment and verifier scores, verified hits come in their fused order, and k is kept."""
    from lookalike.catalog import Catalog
    from lookalike.train.metric.augment import StreetViewAugment

    images, _ = fmnist_test
    with Catalog.open(db_url) as cat:
        cat.index("fashion-mnist:test", model="default", limit=300, progress=False)
        photo = StreetViewAugment()(images[11], np.random.default_rng(5))
        plain = cat.search(photo, k=5)
        hits = cat.search(photo, k=5, rerank=50)
        assert len(hits) == 5 and all(h.alignment is not None and h.verifier is not None for h in hits)
        rr = Reranker()
        fused = [h.score + rr.weight * h.alignment + rr.verifier_weight * h.verifier for h in hits]
        assert fused == sorted(fused, reverse=True)
        assert all(h.alignment is None for h in plain)
        assert "alignment" not in plain[0].to_dict() and "verifier" not in plain[0].to_dict()
        # the same scores as the library computes on the same thumbnails and box
        box = cat.embedder().locate([photo])[0]
        thumbs = [Image.open(io.BytesIO(cat.thumbnail(h.image_id))) for h in hits]
        rr = Reranker(depth=5)
        own = rr.scores(photo, box, rr.prepare(thumbs))
        np.testing.assert_allclose(own["alignment"], [h.alignment for h in hits], atol=1e-5)
        np.testing.assert_allclose(own["verifier"], [h.verifier for h in hits], atol=1e-4)
        with pytest.raises(InvalidRequest, match="rerank depth must be between 1 and 1000"):
            cat.search(photo, k=5, rerank=1001)


def test_cli_search_rerank_json(tmp_path, fmnist_test):
    import subprocess
    import sys

    from lookalike.catalog import Catalog

    db = str(tmp_path / "c.db")
    with Catalog.open(db) as cat:
        cat.index("fashion-mnist:test", model="default", limit=100, progress=False)
    path = tmp_path / "photo.jpg"
    _photo(fmnist_test[0][9])[0].save(path)

    def run(*args, env=None):
        cmd = [sys.executable, "-m", "lookalike.cli", "search", str(path), "--db", db, *args]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)

    proc = run("--rerank", "20", "-k", "3", "--json")
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert len(doc["results"]) == 3 and all(0 <= r["alignment"] <= 1 for r in doc["results"])
    assert all(isinstance(r["verifier"], float) for r in doc["results"])
    # LOOKALIKE_VERIFIER_PRECISION=bf16: the same alignment, verifier scores within about 0.1
    env = dict(os.environ, LOOKALIKE_VERIFIER_PRECISION="bf16")
    half = run("--rerank", "20", "-k", "20", "--json", env=env)
    full = run("--rerank", "20", "-k", "20", "--json")
    assert half.returncode == 0 and full.returncode == 0, half.stderr + full.stderr
    a = {r["image_id"]: r for r in json.loads(full.stdout)["results"]}
    b = {r["image_id"]: r for r in json.loads(half.stdout)["results"]}
    assert a.keys() == b.keys()
    assert all(a[i]["alignment"] == b[i]["alignment"] for i in a)
    diffs = [abs(a[i]["verifier"] - b[i]["verifier"]) for i in a]
    assert 0 < max(diffs) < 0.2, diffs  # bf16 really ran, and stayed close
    bad_env = run("--rerank", "20", env=dict(os.environ, LOOKALIKE_VERIFIER_PRECISION="fp16"))
    assert bad_env.returncode != 0 and "LOOKALIKE_VERIFIER_PRECISION='fp16'" in bad_env.stderr
    table = run("--rerank", "20", "-k", "3")
    assert table.returncode == 0 and "alignment" in table.stdout
    bad = run("--rerank", "-1")
    assert bad.returncode != 0 and "rerank" in bad.stderr
    # --verifier none: alignment only; a verifier file that is not there is named
    align_only = run("--rerank", "20", "-k", "3", "--json", "--verifier", "none")
    assert align_only.returncode == 0, align_only.stderr
    hits = json.loads(align_only.stdout)["results"]
    assert all("alignment" in r and "verifier" not in r for r in hits)
    missing = run("--rerank", "20", "--verifier", str(tmp_path / "nope.pt"))
    assert missing.returncode != 0 and "nope.pt not found" in missing.stderr


def test_embed_and_locate_matches_the_two_separate_calls(fmnist_test):
    """A re-ranked search localizes once; that pass gives the same vectors and boxes as
    embed_images() and locate() (and a model without a localizer gives whole-frame NaN boxes)."""
    from lookalike.embedders import load_embedder
    from lookalike.train.metric.augment import StreetViewAugment

    images, _ = fmnist_test
    photos = [StreetViewAugment()(images[i], np.random.default_rng(i)) for i in range(6)]
    photos.append(Image.fromarray(images[6]))  # a clean catalog shot: its own box
    emb = load_embedder("default")
    vecs, boxes = emb.embed_and_locate(photos)
    np.testing.assert_allclose(vecs, emb.embed_images(photos), atol=1e-6)
    np.testing.assert_array_equal(boxes, emb.locate(photos))
    assert np.isfinite(boxes).all() and tuple(boxes[-1]) == (14.0, 14.0, 28.0, 0.0)
    pix_vecs, pix_boxes = load_embedder("pixels").embed_and_locate(photos)
    assert pix_vecs.shape == (7, 1024) and np.isnan(pix_boxes).all()
