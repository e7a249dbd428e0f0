"""The learned pair verifier (lookalike.verifier, lookalike.train.metric.verifier): a short training
run beats its untrained start, the checkpoint round trip, the shipped verifier on held-out test
products, and the CLI."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch

from lookalike.errors import LookalikeError
from lookalike.verifier import PairVerifier, Verifier, catalog_inputs, load_verifier, photo_inputs


@pytest.fixture(scope="module")
def fmnist_train():
    from lookalike.datasets.fashion_mnist import load_split

    return load_split("train")


def _groups(embedder, images, items, negatives: int, pool: int, seed: int):
    """Street views of ``items`` (indices into ``images``), their boxes, and for each the product
    plus ``negatives`` of the embedder's ``pool`` nearest other images: (photos, boxes, groups)."""
    from lookalike.train.metric.augment import StreetViewAugment

    aug = StreetViewAugment()
    photos = [aug(images[i], np.random.default_rng([seed, int(i)])) for i in items]
    vecs, boxes = embedder.embed_and_locate(photos)
    gallery = embedder.embed_images(list(images), progress=False)
    near = np.argsort(-(vecs @ gallery.T), axis=1)[:, : pool + 1]
    rng = np.random.default_rng(seed)
    groups = []
    for row, i in enumerate(items):
        others = near[row][near[row] != i][:pool]
        groups.append(np.concatenate([[i], rng.choice(others, negatives, replace=False)]))
    return photos, boxes, np.array(groups)


def _pick_rate(verifier: Verifier, photos, boxes, groups, images) -> float:
    """How often the verifier scores the product above every negative of its group."""
    wins = 0
    for photo, box, group in zip(photos, boxes, groups, strict=True):
        crop = photo_inputs([photo], np.asarray([box]))
        s = verifier.scores(crop, catalog_inputs([images[j] for j in group]))
        wins += int(np.argmax(s) == 0)
    return wins / len(groups)


def test_a_short_training_run_beats_its_untrained_start(tmp_path, fmnist_train):
    from lookalike.embedders import load_embedder
    from lookalike.train.metric.trainer import TrainData
    from lookalike.train.metric.verifier import VerifierRecipe, train_verifier

    images, labels = fmnist_train
    train = TrainData(images[:1500], np.arange(1500), labels[:1500].astype(np.int64))
    recipe = VerifierRecipe(steps=80, batch=12, negatives=3, pool=200, lr=2e-3, seed=0)
    path, metrics = train_verifier(train, recipe, out=tmp_path / "v.pt", progress=False)
    assert metrics["final_loss"] < np.log(4)  # chance: 1 of 4
    # held out: products the run never saw, among 3 negatives from the embedder's 200 nearest
    held = images[1500:2100]
    photos, boxes, groups = _groups(load_embedder("default"), held, np.arange(80), 3, 200, seed=5)
    torch.manual_seed(0)
    untrained = Verifier(PairVerifier())
    before = _pick_rate(untrained, photos, boxes, groups, held)
    after = _pick_rate(load_verifier(path), photos, boxes, groups, held)
    assert after > before + 0.15 and after > 0.45, (before, after)  # measured: 0.30 -> 0.70


def test_checkpoint_round_trip(tmp_path, fmnist_train):
    from lookalike.train.metric.augment import StreetViewAugment

    torch.manual_seed(1)
    model = PairVerifier()
    with torch.no_grad():  # make BatchNorm's running statistics part of the check too
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    verifier = Verifier(model, recipe={"steps": 1})
    path = verifier.save(tmp_path / "v.pt", {"final_loss": 1.0})
    loaded = load_verifier(path)
    images = fmnist_train[0][:12]
    photo = StreetViewAugment()(images[0], np.random.default_rng(0))
    q, c = photo_inputs([photo], np.full((1, 4), np.nan)), catalog_inputs(list(images))
    # the file keeps float16 weights: the loaded verifier equals the original with rounded weights
    rounded = PairVerifier()
    rounded.load_state_dict(
        {k: v.half().float() if v.is_floating_point() else v for k, v in model.state_dict().items()}
    )
    np.testing.assert_allclose(loaded.scores(q, c), Verifier(rounded).scores(q, c), rtol=1e-5, atol=1e-5)
    again = load_verifier(Verifier(loaded.model).save(tmp_path / "v2.pt"))
    np.testing.assert_array_equal(again.scores(q, c), loaded.scores(q, c))
    assert loaded.recipe == {"steps": 1}


def test_scoring_folds_batch_norm_without_changing_the_logits(fmnist_train):
    """Scores come from a folded, channels-last copy (inference_copy): the trained network's own
    eval-mode logits to float32 rounding; bf16 scoring stays close and keeps the order."""
    from lookalike.train.metric.augment import StreetViewAugment

    torch.manual_seed(2)
    model = PairVerifier()
    with torch.no_grad():  # BatchNorm statistics and affine terms far from the identity
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.2, 3.0)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
    model.eval()
    images = fmnist_train[0][:300]
    photo = StreetViewAugment()(images[0], np.random.default_rng(3))
    q, c = photo_inputs([photo], np.full((1, 4), np.nan)), catalog_inputs(list(images))
    with torch.inference_mode():
        want = model(q.expand(len(c), -1, -1, -1), c).numpy()
    verifier = Verifier(model)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in verifier._fast.modules())
    got = verifier.scores(q, c)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * np.abs(want).max())
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in verifier.model.modules())  # saved as trained
    shipped, half = load_verifier(), load_verifier(precision="bf16")
    full, rounded = shipped.scores(q, c), half.scores(q, c)
    assert np.corrcoef(full, rounded)[0, 1] > 0.99, np.corrcoef(full, rounded)
    assert np.abs(full - rounded).max() < 0.1 * full.std() + 0.05, (np.abs(full - rounded).max(), full.std())
    with pytest.raises(LookalikeError, match="precision"):
        Verifier(model, precision="fp16")


def test_the_shipped_verifier_recognises_held_out_products():
    """Test-split products (never trained on), each against 7 of the default model's 40 nearest
    other catalog images: the shipped verifier picks the product far above chance (1 in 8)."""
    from lookalike.datasets.fashion_mnist import load_split
    from lookalike.embedders import load_embedder

    images = load_split("test")[0][:3000]
    photos, boxes, groups = _groups(load_embedder("default"), images, np.arange(0, 3000, 30), 7, 40, seed=9)
    rate = _pick_rate(load_verifier(), photos, boxes, groups, images)
    assert rate > 0.35, rate


def test_an_interrupted_run_resumes_to_the_same_verifier(tmp_path, fmnist_train):
    """Stopped after 3 of 6 steps and run again, a run ends with the weights of an uninterrupted
    one (batches are keyed by seed and step; the state file keeps optimiser and schedule)."""
    from lookalike.train.metric.trainer import TrainData
    from lookalike.train.metric.verifier import VerifierRecipe, train_verifier

    images, labels = fmnist_train
    train = TrainData(images[:300], np.arange(300), labels[:300].astype(np.int64))
    recipe = VerifierRecipe(steps=6, batch=6, negatives=3, pool=20, val_products=30, val_every=3)
    whole, m_whole = train_verifier(
        train, recipe, out=tmp_path / "whole.pt", run_dir=tmp_path / "a", progress=False
    )
    state, _ = train_verifier(
        train, recipe, out=tmp_path / "parts.pt", run_dir=tmp_path / "b", stop_after=3, progress=False
    )
    assert state == tmp_path / "b" / "state.pt" and not (tmp_path / "parts.pt").exists()
    parts, m_parts = train_verifier(
        train, recipe, out=tmp_path / "parts.pt", run_dir=tmp_path / "b", progress=False
    )
    a, b = load_verifier(whole).model.state_dict(), load_verifier(parts).model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert m_whole["val_pick"] == m_parts["val_pick"] and 0 <= m_whole["val_pick"] <= 1
    assert (tmp_path / "a" / "curves.png").stat().st_size > 0
    history = (tmp_path / "a" / "history.json").read_text()
    assert '"step": 3' in history and "val_pick_embedding" in history
    # another recipe in the same run folder is refused, not silently mixed
    with pytest.raises(LookalikeError, match="belongs to a run with another recipe"):
        train_verifier(
            train,
            VerifierRecipe(steps=7, batch=6, negatives=3, pool=20),
            out=tmp_path / "c.pt",
            run_dir=tmp_path / "a",
            progress=False,
        )


def test_bfloat16_training_learns_too(tmp_path, fmnist_train):
    """--precision bf16 (the shipped verifier's): autocast passes, float32 weights in the file."""
    from lookalike.train.metric.trainer import TrainData
    from lookalike.train.metric.verifier import VerifierRecipe, train_verifier

    images, labels = fmnist_train
    train = TrainData(images[:1500], np.arange(1500), labels[:1500].astype(np.int64))
    recipe = VerifierRecipe(steps=60, batch=12, negatives=3, pool=200, lr=2e-3, precision="bf16")
    path, metrics = train_verifier(train, recipe, out=tmp_path / "v.pt", progress=False)
    assert metrics["final_loss"] < np.log(4) - 0.1, metrics  # chance: 1 of 4
    assert load_verifier(path).recipe["precision"] == "bf16"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"precision": "fp8"}, "unknown precision 'fp8'"),
        ({"val_products": 299}, "val_products must be between 0 and"),
        ({"val_products": 10, "val_negatives": 0}, "val_negatives must be between 1"),
        ({"val_every": 0}, "val_every and checkpoint_every must be at least 1"),
    ],
)
def test_bad_recipes_are_refused_before_any_work(tmp_path, fmnist_train, change, message):
    from lookalike.train.metric.trainer import TrainData
    from lookalike.train.metric.verifier import VerifierRecipe, train_verifier

    images, labels = fmnist_train
    train = TrainData(images[:300], np.arange(300), labels[:300].astype(np.int64))
    recipe = VerifierRecipe(steps=2, batch=4, negatives=3, pool=20, **change)
    with pytest.raises(LookalikeError, match=message):
        train_verifier(train, recipe, out=tmp_path / "v.pt", progress=False)
    assert not (tmp_path / "v.pt").exists()


def test_a_pause_without_a_run_folder_is_refused_before_any_work(tmp_path, fmnist_train):
    from lookalike.train.metric.trainer import TrainData
    from lookalike.train.metric.verifier import VerifierRecipe, train_verifier

    images, labels = fmnist_train
    train = TrainData(images[:300], np.arange(300), labels[:300].astype(np.int64))
    with pytest.raises(LookalikeError, match="stop_after needs a run_dir"):
        train_verifier(
            train,
            VerifierRecipe(steps=4, batch=4, negatives=3, pool=20),
            out=tmp_path / "v.pt",
            stop_after=2,
            progress=False,
        )
    assert not (tmp_path / "v.pt").exists()


def test_cli_trains_a_verifier_and_refuses_bad_settings(tmp_path):
    out = tmp_path / "v.pt"
    cmd = [sys.executable, "-m", "lookalike.cli", "train", "verifier", "--limit", "300"]
    cmd += ["--run-dir", str(tmp_path / "run"), "--out", str(out)]
    small = ["--steps", "2", "--batch", "4", "--pool", "10"]
    ok = subprocess.run(cmd + small, capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    recipe = load_verifier(out).recipe
    assert recipe["steps"] == 2 and recipe["val_products"] == 30  # a tenth of a small catalog
    assert (tmp_path / "run" / "state.pt").exists() and (tmp_path / "run" / "curves.png").exists()
    bad = subprocess.run(cmd + ["--pool", "5000"], capture_output=True, text=True)
    assert bad.returncode == 1 and "pool must be larger than negatives" in bad.stderr
    bad = subprocess.run(cmd + small + ["--precision", "fp8"], capture_output=True, text=True)
    assert bad.returncode == 1 and "unknown precision 'fp8'" in bad.stderr
