"""`make demo` over a catalog indexed with earlier weights: set aside and re-indexed, never lost."""

from __future__ import annotations

import pytest
import torch
from rich.console import Console

from lookalike.catalog import Catalog
from lookalike.checkpoint import load_checkpoint, save_checkpoint
from lookalike.demo import _set_aside_if_stale
from lookalike.embedders import _cache, default_model_path


def test_a_demo_catalog_from_older_weights_is_set_aside(tmp_path):
    if not default_model_path().exists():
        pytest.skip("no shipped default model")
    ckpt = load_checkpoint(default_model_path())
    fields = {k: ckpt[k] for k in ("kind", "arch", "preprocess", "recipe", "metrics")}
    path = tmp_path / "model.pt"
    save_checkpoint(path, state_dict=ckpt["state_dict"], **fields)
    name = f"trained:{path}"
    db = tmp_path / "demo.db"
    with Catalog.open(db) as cat:
        cat.index("fashion-mnist:test", model=name, limit=20)
    _set_aside_if_stale(str(db), name, Console(quiet=True))
    assert db.exists() and not (tmp_path / "demo.db.stale").exists()  # same weights: kept

    retrained = {
        k: v + 0.01 * torch.randn_like(v) if v.is_floating_point() else v
        for k, v in ckpt["state_dict"].items()
    }
    save_checkpoint(path, state_dict=retrained, **fields)
    _cache.clear()
    _set_aside_if_stale(str(db), name, Console(quiet=True))
    assert not db.exists()
    with Catalog.open(tmp_path / "demo.db.stale") as old:  # nothing lost: the old catalog is intact
        assert old.stats()["products"] == 20


def test_the_demo_learns_its_words_once_and_again_when_the_vectors_change(tmp_path):
    from lookalike.demo import _text_model
    from lookalike.text import load_text_model

    db = tmp_path / "demo.db"
    with Catalog.open(db) as cat:
        cat.index("fashion-mnist:test", model="pixels", limit=60, progress=False)
        first = _text_model(cat, str(db), Console(quiet=True))
        path = tmp_path / "demo-text.pt"
        assert first.path == path and path.is_file() and first.image_model == "pixels"
        stamp = path.stat().st_mtime_ns
        assert _text_model(cat, str(db), Console(quiet=True)).path == path
        assert path.stat().st_mtime_ns == stamp  # reused, not trained again
        stale = load_text_model(path)
        stale.image_fingerprint = "sha256:0123456789abcdef"  # learned from vectors of other weights
        stale.save(path)
        again = _text_model(cat, str(db), Console(quiet=True))
        assert again.image_fingerprint == cat.store.get_meta("fingerprint:pixels")
        assert load_text_model(path).image_fingerprint == again.image_fingerprint
