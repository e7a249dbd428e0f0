"""Retrieval metrics on hand-made examples, and the protocol on real images with real embedders."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from lookalike.evaluation import Gallery, QuerySet, evaluate, map_at_r, nearest_neighbours, recall_at_k, score


def test_recall_at_k_by_hand():
    ranked = np.array([[1, 2, 3], [2, 1, 3], [3, 3, 3], [9, 9, 1]])
    labels = np.array([1, 1, 1, 1])
    r = recall_at_k(ranked, labels, ks=(1, 2, 3))
    assert r == {"R@1": 0.25, "R@2": 0.5, "R@3": 0.75}


def test_map_at_r_by_hand():
    # query 0: R=2, hits at ranks 1 and 3 -> AP@R = (1/1 + 0) / 2 = 0.5 (rank 3 is beyond R)
    # query 1: R=1, hit at rank 1 -> 1.0; query 2: R=3, hits at 2, 3 -> (1/2 + 2/3) / 3
    ranked = np.array([[5, 6, 5], [7, 5, 5], [0, 8, 8]])
    labels = np.array([5, 7, 8])
    r = np.array([2, 1, 3])
    expected = (0.5 + 1.0 + (0.5 + 2 / 3) / 3) / 3
    assert map_at_r(ranked, labels, r) == pytest.approx(expected)


def test_nearest_neighbours_and_score_by_hand():
    g = np.eye(4, dtype=np.float32)
    q = np.array([[0.9, 0.1, 0, 0], [0, 0, 0.2, 0.8], [0, 0.6, 0.4, 0]], dtype=np.float32)
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    nn = nearest_neighbours(q, g, 2)
    assert nn.tolist() == [[0, 1], [3, 2], [1, 2]]
    g_ids = np.array(["a", "b", "c", "d"])
    q_ids = np.array(["a", "c", "c"])
    g_cls = np.array([0, 0, 1, 1])
    q_cls = np.array([0, 1, 1])
    res, top = score(q, g, q_ids, g_ids, q_cls, g_cls, ks=(1, 2))
    # instance: q0 hits at 1; q1 (c) second; q2 (c) second
    assert res["instance"]["R@1"] == pytest.approx(1 / 3)
    assert res["instance"]["R@2"] == pytest.approx(1.0)
    # class: q0 top-1 a (0) ok; q1 top-1 d (1) ok; q2 top-1 b (0) wrong, then c ok
    assert res["class"]["R@1"] == pytest.approx(2 / 3)
    # class mAP@R (R=2 each): q0 ranks a,b -> 1; q1 d,c -> 1; q2 b,c -> (0 + 1/2)/2
    assert res["class"]["mAP@R"] == pytest.approx((1 + 1 + 0.25) / 3)
    assert top.tolist() == [[0, 1], [3, 2], [1, 2]]


def _shape(kind: int, size: int = 28) -> Image.Image:
    a = np.zeros((size, size), np.uint8)
    if kind == 0:
        a[6:22, 6:22] = 255
    elif kind == 1:
        a[:, 12:16] = 255
    elif kind == 2:
        a[12:16, :] = 255
    else:
        np.fill_diagonal(a, 255)
    return Image.fromarray(a, "L")


def test_evaluate_compares_embedders_on_real_images(tmp_path):
    from lookalike.evaluation.report import write_report

    gallery = Gallery(
        [_shape(i) for i in range(4)], np.array(["p0", "p1", "p2", "p3"]), np.array([0, 1, 1, 2])
    )
    # queries: the same shapes, slightly shifted and larger; one "unclean" query
    qs = [_shape(i, 32).crop((2, 1, 30, 29)) for i in (0, 1, 2, 3)]
    queries = QuerySet(
        qs, np.array(["p0", "p1", "p2", "p3"]), np.array([0, 1, 1, 2]), np.array([True, True, True, False])
    )
    res = evaluate(["pixels"], queries, gallery, protocol="toy", ks=(1, 2))
    full = res.results["pixels"]["full"]
    assert full["instance"]["R@1"] == 1.0
    assert res.results["pixels"]["clean"]["instance"]["R@2"] == 1.0
    assert res.n_clean == 3
    paths = write_report(res, tmp_path, queries, gallery, n_examples=2, k=2)
    assert "| `pixels` | clean | 3 |" in paths["md"].read_text()
    assert Image.open(paths["png"]).size[0] > 100


def test_eval_cli_on_your_own_photos(tmp_path):
    from typer.testing import CliRunner

    from lookalike.cli import app

    shop = tmp_path / "shop"
    for i in range(4):
        (shop / f"cat{i % 2}").mkdir(parents=True, exist_ok=True)
        _shape(i).save(shop / f"cat{i % 2}" / f"sku-{i}.png")
    photos = tmp_path / "photos"
    photos.mkdir()
    rows = ["product_id,path,clean"]
    for i in (0, 3):
        _shape(i, 40).convert("RGB").save(photos / f"p{i}.jpg")
        rows.append(f"sku-{i},photos/p{i}.jpg,{1 if i == 0 else 0}")
    (tmp_path / "street.csv").write_text("\n".join(rows) + "\n")
    out = tmp_path / "report"
    r = CliRunner().invoke(
        app,
        [
            "eval",
            "-m",
            "pixels",
            "--street",
            str(tmp_path / "street.csv"),
            "--gallery",
            str(shop),
            "--out",
            str(out),
        ],
    )
    assert r.exit_code == 0, r.output
    import json

    doc = json.loads((out / "custom.json").read_text())
    assert doc["n_queries"] == 2 and doc["n_gallery"] == 4 and doc["n_clean"] == 1
    assert doc["results"]["pixels"]["full"]["instance"]["R@1"] == 1.0
    # the catalog CSV's column name works too, and a CSV without either is named
    (tmp_path / "image.csv").write_text("product_id,image\nsku-0,photos/p0.jpg\nsku-3,photos/p3.jpg\n")
    r = CliRunner().invoke(
        app,
        [
            "eval",
            "-m",
            "pixels",
            "--street",
            str(tmp_path / "image.csv"),
            "--gallery",
            str(shop),
            "--out",
            str(out),
        ],
    )
    assert r.exit_code == 0, r.output
    assert (
        json.loads((out / "custom.json").read_text())["results"]["pixels"]["full"]["instance"]["R@1"] == 1.0
    )
    (tmp_path / "nocol.csv").write_text("product_id,photo\nsku-0,photos/p0.jpg\n")
    r = CliRunner().invoke(app, ["eval", "--street", str(tmp_path / "nocol.csv"), "--gallery", str(shop)])
    assert "needs product_id and path (or image) columns" in str(r.exception)
    (tmp_path / "bad.csv").write_text("product_id,path\nsku-9,photos/p0.jpg\n")
    r = CliRunner().invoke(app, ["eval", "--street", str(tmp_path / "bad.csv"), "--gallery", str(shop)])
    assert r.exit_code != 0
    assert "sku-9" in str(r.exception)


def test_evaluate_shows_progress_unless_told_not_to(monkeypatch, capsys):
    from lookalike.rerank import Reranker

    monkeypatch.setenv("LOOKALIKE_PROGRESS", "1")  # draw bars although stderr is not a terminal
    gallery = Gallery([_shape(i) for i in range(4)], np.array(["p0", "p1", "p2", "p3"]))
    queries = QuerySet([_shape(i, 32) for i in range(4)], np.array(["p0", "p1", "p2", "p3"]))
    evaluate(["pixels"], queries, gallery, ks=(1,), rerank=Reranker(depth=2, verifier=None))
    err = capsys.readouterr().err
    for bar in (
        "pixels: embedding the gallery",
        "pixels: embedding the queries",
        "pixels +rerank: re-ranking",
    ):
        assert bar in err
    assert "4/4" in err
    evaluate(["pixels"], queries, gallery, ks=(1,), rerank=Reranker(depth=2, verifier=None), progress=False)
    assert capsys.readouterr().err == ""
