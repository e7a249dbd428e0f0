"""End-to-end CLI: the real `lookalike` command on a real folder of product photos."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import typer.main


def run(*args, check=True):
    proc = subprocess.run(
        [sys.executable, "-m", "lookalike.cli", *args], capture_output=True, text=True, timeout=300
    )
    if check:
        assert proc.returncode == 0, proc.stderr
    return proc


@pytest.fixture
def indexed(tmp_path, product_photos):
    db = tmp_path / "cli.db"
    out = run("index", str(product_photos), "--db", str(db), "--model", "pixels")
    assert "indexed 40/40 products" in out.stdout
    return db


def test_search_json_document(indexed, product_photos):
    query = next(product_photos.rglob("sku007.*"))
    doc = json.loads(run("search", str(query), "--db", str(indexed), "-k", "3", "--json").stdout)
    assert doc["query"] == str(query) and doc["model"] == "pixels"
    assert len(doc["results"]) == 3
    assert set(doc["results"][0]) == {"product_id", "score", "image_id", "title", "category"}
    assert doc["results"][0]["product_id"] == "sku007"


def test_search_filter_similar_delete_stats(indexed, product_photos):
    query = next(product_photos.rglob("sku000.*"))
    doc = json.loads(
        run("search", str(query), "--db", str(indexed), "--filter", "category=Bag", "--json").stdout
    )
    assert doc["results"] and {r["category"] for r in doc["results"]} == {"Bag"}
    sim = json.loads(run("similar", "sku000", "--db", str(indexed), "-k", "2", "--json").stdout)
    assert len(sim["results"]) == 2 and sim["query"] == "sku000"
    run("delete", "sku000", "--db", str(indexed))
    stats = json.loads(run("stats", "--db", str(indexed), "--json").stdout)
    assert stats["products"] == 39 and stats["models"] == {"pixels": 39}


def test_check_index_reports_recall_against_exact_search(indexed):
    doc = json.loads(run("check-index", "--db", str(indexed), "--samples", "10", "-k", "3", "--json").stdout)
    # 40 products: the catalog searches exactly, so the check must find every true neighbour
    assert doc["index"] == "exact" and doc["vectors"] == 40 and doc["samples"] == 10
    assert doc["recall@3"] == 1.0
    out = run("check-index", "--db", str(indexed), "--samples", "5").stdout
    assert "exact index over 40 vectors of pixels: recall@10 1.000" in " ".join(out.split())
    bad = run("check-index", "--db", str(indexed), "--samples", "0", check=False)
    assert bad.returncode != 0 and "samples" in bad.stderr


def test_errors_are_one_line_without_traceback(indexed, tmp_path):
    bad = tmp_path / "bad.png"
    bad.write_text("not an image")
    proc = run("search", str(bad), "--db", str(indexed), check=False)
    assert proc.returncode == 1
    assert proc.stderr.strip().count("\n") == 0 and "bad.png" in proc.stderr
    assert "Traceback" not in proc.stderr
    proc = run("similar", "nope", "--db", str(indexed), check=False)
    assert proc.returncode == 1 and "product 'nope' not found" in proc.stderr
    proc = run("search", str(bad), "--db", str(indexed), "--filter", "oops", check=False)
    assert proc.returncode == 1
    proc = run("--debug", "similar", "nope", "--db", str(indexed), check=False)
    assert proc.returncode != 0 and "Traceback" in proc.stderr


def test_every_command_has_help():
    from lookalike.cli import app

    def walk(cmd, path=()):
        yield path, cmd
        if hasattr(cmd, "commands"):
            for name, sub in cmd.commands.items():
                yield from walk(sub, (*path, name))

    root = typer.main.get_command(app)
    missing = [" ".join(p) for p, c in walk(root) if p and not (c.help or c.short_help)]
    assert not missing, f"commands without help text: {missing}"
    names = {p[0] for p, _ in walk(root) if p}
    assert {"index", "search", "similar", "delete", "stats"} <= names
