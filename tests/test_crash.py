"""kill -9 in the middle of indexing leaves a consistent DB; a re-run completes with no duplicates."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time

import pytest


def _consistency(db) -> dict:
    c = sqlite3.connect(db)
    q = lambda sql: c.execute(sql).fetchone()[0]  # noqa: E731
    out = {
        "products": q("SELECT COUNT(*) FROM products"),
        "distinct_products": q("SELECT COUNT(DISTINCT product_id) FROM products"),
        "products_without_images": q(
            "SELECT COUNT(*) FROM products WHERE id NOT IN (SELECT product_id FROM product_images)"
        ),
        "images_without_vectors": q(
            "SELECT COUNT(*) FROM images WHERE id NOT IN (SELECT image_id FROM embeddings)"
        ),
        "dangling_links": q(
            "SELECT COUNT(*) FROM product_images WHERE image_id NOT IN (SELECT id FROM images) "
            "OR product_id NOT IN (SELECT id FROM products)"
        ),
        "integrity": c.execute("PRAGMA integrity_check").fetchone()[0],
    }
    c.close()
    return out


def _index_cmd(db, limit):
    return [
        sys.executable,
        "-m",
        "lookalike.cli",
        "index",
        "fashion-mnist:train",
        "--db",
        str(db),
        "--model",
        "pixels",
        "--limit",
        str(limit),
        "--batch-size",
        "200",
    ]


@pytest.mark.timeout(300)
def test_kill_minus_9_mid_batch_then_rerun(tmp_path):
    db = tmp_path / "crash.db"
    limit = 12_000
    proc = subprocess.Popen(_index_cmd(db, limit), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 120
    seen = 0
    while time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
        if db.exists():
            try:
                seen = _consistency(db)["products"]
            except sqlite3.OperationalError:
                continue
            if seen >= 1000:
                break
    assert proc.poll() is None, "indexing finished before it could be killed; raise the limit"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    state = _consistency(db)
    assert 0 < state["products"] < limit
    assert state["products"] % 200 == 0  # only whole batches were committed
    assert state["products"] == state["distinct_products"]
    assert state["products_without_images"] == state["images_without_vectors"] == state["dangling_links"] == 0
    assert state["integrity"] == "ok"

    done = subprocess.run(_index_cmd(db, limit), capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr
    final = _consistency(db)
    assert final["products"] == final["distinct_products"] == limit
    assert final["products_without_images"] == final["images_without_vectors"] == final["dangling_links"] == 0
