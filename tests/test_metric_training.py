"""Metric training end to end on small real subsets: learning, resuming, checkpoints, embedders, CLI."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from lookalike.datasets.fashion_mnist import load_split
from lookalike.embedders import load_embedder
from lookalike.errors import LookalikeError, ModelError
from lookalike.train.metric import MetricRecipe, train_metric

TINY = dict(
    widths=(8, 16, 32, 32),
    identities_per_batch=16,
    street_per_identity=1,
    limit=300,
    val_items=50,
    val_distractors=100,
    val_every=1000,
    checkpoint_every=1000,
    aug_size=(32, 48),
    warmup=2,
    threads=1,
    localize=False,  # the localizer has its own tests (test_localizer.py)
    polarity=False,
)


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_short_training_beats_its_untrained_start(tmp_path, precision):
    # about a minute on 2 cores: 1,350 products, easy street views (difficulty 0: centred, upright,
    # but on random backgrounds and tints), validated on 150 held-out products among 450
    recipe = MetricRecipe(
        **(
            TINY
            | dict(
                widths=(16, 32, 64, 128),
                identities_per_batch=48,
                limit=1500,
                val_items=150,
                val_distractors=300,
            )
        ),
        steps=60,
        difficulty=0.0,
        val_difficulty=0.0,
        precision=precision,
    )
    res = train_metric(recipe=recipe, run_dir=tmp_path / "run", progress=False)
    start, end = res.history[0], res.history[-1]
    assert start["step"] == 0 and end["step"] == 60
    assert end["val_R@1"] > start["val_R@1"], (start, end)
    assert end["val_R@10"] > start["val_R@10"] + 0.05, (start, end)
    assert (tmp_path / "run" / "curves.png").stat().st_size > 1000


@pytest.mark.parametrize(
    "variant",
    [
        dict(precision="fp32"),
        dict(precision="bf16"),
        # the class proxies are trained too: they must be saved and restored with the network
        dict(precision="fp32", class_weight=0.5, class_loss="proxy"),
    ],
    ids=["fp32", "bf16", "class-proxy"],
)
def test_resumed_run_equals_uninterrupted_run(tmp_path, variant):
    recipe = MetricRecipe(
        **(TINY | dict(checkpoint_every=2)),
        steps=6,
        offline_every=3,
        offline_pool=64,
        seed=3,
        **variant,
    )
    full = train_metric(recipe=recipe, run_dir=tmp_path / "a", progress=False)
    part = train_metric(recipe=recipe, run_dir=tmp_path / "b", progress=False, stop_after=4)
    assert part.checkpoint.name == "state.pt"
    resumed = train_metric(recipe=recipe, run_dir=tmp_path / "b", progress=False)
    a = torch.load(full.checkpoint, weights_only=True)["state_dict"]
    b = torch.load(resumed.checkpoint, weights_only=True)["state_dict"]
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert [h["loss"] for h in full.history if "loss" in h] == [
        h["loss"] for h in resumed.history if "loss" in h
    ]


@pytest.mark.parametrize("pool", ["avgmax", "grid"])
def test_checkpoint_round_trip_gives_identical_embeddings(tmp_path, pool):
    from lookalike.checkpoint import load_checkpoint
    from lookalike.train.metric.model import build_model, preprocess_images

    recipe = MetricRecipe(**TINY, steps=3, pool=pool, command="lookalike train metric --steps 3")
    res = train_metric(recipe=recipe, run_dir=tmp_path / "run", progress=False)
    payload = load_checkpoint(res.checkpoint, kind="metric")
    # the grid head sees the last 4x4 feature map whole: 16x the channels of one pooled vector
    assert payload["arch"].get("pool", "avgmax") == pool
    assert payload["state_dict"]["head.0.weight"].shape[1] == (32 * 16 if pool == "grid" else 64)
    # weights are stored as float16 (half the file) and come back as float32
    raw = torch.load(res.checkpoint, weights_only=True)
    assert raw["weights_dtype"] == "float16" and raw["state_dict"]["head.0.weight"].dtype == torch.float16
    assert payload["state_dict"]["head.0.weight"].dtype == torch.float32
    assert payload["recipe"]["command"] == "lookalike train metric --steps 3"
    assert payload["preprocess"]["size"] == 32 and "val_R@1" in payload["metrics"]
    x, _ = load_split("test")
    images = [Image.fromarray(a) for a in x[:20]] + [Image.new("RGB", (120, 90), (200, 30, 30))]
    emb = load_embedder(f"trained:{res.checkpoint}", cache=False)
    assert emb.dim == 128
    v1 = emb.embed_images(images)
    model = build_model(payload["arch"])
    model.load_state_dict(payload["state_dict"])
    model.eval()
    with torch.no_grad():
        v2 = model(preprocess_images(images, payload["preprocess"])).numpy()
    np.testing.assert_array_equal(v1, v2.astype(np.float32) / np.linalg.norm(v2, axis=1, keepdims=True))
    np.testing.assert_array_equal(
        v1, load_embedder(f"trained:{res.checkpoint}", cache=False).embed_images(images)
    )
    with pytest.raises(ModelError, match="not found"):
        load_embedder(f"trained:{tmp_path}/missing.pt", cache=False)


def test_an_unknown_pooling_is_refused_before_any_training(tmp_path):
    with pytest.raises(ModelError, match="unknown pooling 'median'"):
        train_metric(recipe=MetricRecipe(**TINY, steps=3, pool="median"), run_dir=tmp_path, progress=False)
    assert not (tmp_path / "state.pt").exists()
    with pytest.raises(LookalikeError, match="unknown precision 'fp8'"):
        train_metric(recipe=MetricRecipe(**TINY, steps=3, precision="fp8"), run_dir=tmp_path, progress=False)
    assert not (tmp_path / "state.pt").exists()
    with pytest.raises(LookalikeError, match="unknown class loss 'arcface'"):
        train_metric(
            recipe=MetricRecipe(**TINY, steps=3, class_weight=0.5, class_loss="arcface"),
            run_dir=tmp_path,
            progress=False,
        )
    assert not (tmp_path / "state.pt").exists()


def test_torchvision_embedder_loads_a_local_weights_file(tmp_path):
    import torchvision

    torch.manual_seed(0)
    weights = tmp_path / "resnet18.pth"
    torch.save(torchvision.models.resnet18().state_dict(), weights)
    emb = load_embedder(f"torchvision:resnet18@{weights}", cache=False)
    assert emb.dim == 512
    imgs = [Image.new("RGB", (64, 48), (i * 40, 100, 200 - i * 30)) for i in range(3)]
    v = emb.embed_images(imgs)
    assert v.shape == (3, 512)
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1.0, rtol=1e-5)
    bad = tmp_path / "bad.pth"
    torch.save({"nothing": torch.zeros(1)}, bad)
    with pytest.raises(ModelError, match="does not fit"):
        load_embedder(f"torchvision:resnet18@{bad}", cache=False)
    with pytest.raises(ModelError, match="unknown torchvision model"):
        load_embedder(f"torchvision:notanet@{weights}", cache=False)
    # the same file initialises a metric-learning backbone (FC512-ELU-FC128-L2 head on top)
    from lookalike.train.metric.model import build_model

    net = build_model({"backbone": "resnet18", "in_channels": 1}, pretrained=str(weights)).eval()
    ref = torchvision.models.resnet18()
    ref.load_state_dict(torch.load(weights, weights_only=True))
    torch.testing.assert_close(net.backbone.net.conv1.weight, ref.conv1.weight)
    with torch.no_grad():
        out = net(torch.randn(2, 1, 32, 32))
    assert out.shape == (2, 128)
    torch.testing.assert_close(out.norm(dim=1), torch.ones(2))


def test_cli_trains_then_evaluates(tmp_path):
    from typer.testing import CliRunner

    from lookalike.cli import app

    runner = CliRunner()
    ckpt = tmp_path / "m.pt"
    r = runner.invoke(
        app,
        [
            "train",
            "metric",
            "--limit",
            "300",
            "--steps",
            "3",
            "--identities",
            "16",
            "--widths",
            "8,16,32,32",
            "--run-dir",
            str(tmp_path / "run"),
            "--out",
            str(ckpt),
            "--threads",
            "1",
            "--aug-size",
            "32,48",
            "--localizer-steps",
            "5",
            "--localizer-views",
            "200",
        ],
    )
    assert r.exit_code == 0, r.output
    assert ckpt.exists()
    assert f"use it: lookalike index fashion-mnist --model trained:{ckpt}" in " ".join(r.output.split())
    r = runner.invoke(
        app,
        [
            "eval",
            "-m",
            "pixels",
            "-m",
            f"trained:{ckpt}",
            "--queries",
            "20",
            "--distractors",
            "200",
            "--out",
            str(tmp_path / "eval"),
        ],
    )
    assert r.exit_code == 0, r.output
    md = (tmp_path / "eval" / "street-to-shop.md").read_text()
    assert "`pixels`" in md and f"`trained:{ckpt}`" in md
    assert (tmp_path / "eval" / "street-to-shop-topk.png").exists()
    r = runner.invoke(
        app,
        [
            "train",
            "metric",
            "--mining",
            "bogus",
            "--steps",
            "1",
            "--limit",
            "300",
            "--run-dir",
            str(tmp_path / "run2"),
        ],
    )
    assert r.exit_code != 0


def test_trains_on_a_folder_source_and_refuses_the_test_split(tmp_path):
    from lookalike.errors import SourceError
    from lookalike.train.metric.data import load_train_data

    x, y = load_split("train")
    for i in range(24):
        folder = tmp_path / "shop" / ("shoes" if y[i] in (5, 7, 9) else "clothes")
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(x[i]).save(folder / f"sku-{i}.png")
    (tmp_path / "shop" / "clothes" / "broken.png").write_bytes(b"not an image")
    data = load_train_data(str(tmp_path / "shop"))
    assert len(data) == 24 and data.skipped_images == 1
    assert set(data.class_labels.tolist()) == {0, 1}
    res = train_metric(
        data,
        MetricRecipe(**(TINY | dict(identities_per_batch=8, limit=None)), steps=2),
        run_dir=tmp_path / "run",
        progress=False,
    )
    assert res.checkpoint.exists()
    with pytest.raises(SourceError, match="evaluation only"):
        load_train_data("fashion-mnist:test")


def test_render_processes_give_the_same_run_as_the_render_thread(tmp_path):
    # forked render workers render steps ahead, out of order; offline mining every 3 steps throws
    # away what they rendered for the batches it changes. The weights must not notice.
    recipe = MetricRecipe(**TINY, steps=7, offline_every=3, offline_pool=64, seed=5)
    thread = train_metric(recipe=recipe, run_dir=tmp_path / "a", progress=False, device="cpu")
    procs = train_metric(recipe=recipe, run_dir=tmp_path / "b", progress=False, device="cpu", workers=2)
    a = torch.load(thread.checkpoint, weights_only=True)["state_dict"]
    b = torch.load(procs.checkpoint, weights_only=True)["state_dict"]
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert thread.metrics["train_device"] == "cpu"
    with pytest.raises(LookalikeError, match="workers"):
        train_metric(recipe=recipe, run_dir=tmp_path / "c", progress=False, workers=-1)


def test_fine_tuning_starts_from_the_checkpoint_and_refuses_another_network(tmp_path):
    """``init`` loads a trained network (and seeds the class proxies at the category means); at a
    learning rate of 0 the fine-tuned checkpoint keeps the weights it started from."""
    from lookalike.checkpoint import load_checkpoint

    first = train_metric(
        recipe=MetricRecipe(**TINY, steps=4, class_weight=0.5, class_loss="proxy"),
        run_dir=tmp_path / "first",
        progress=False,
    )
    again = MetricRecipe(
        **TINY, steps=1, lr=0.0, class_weight=0.5, class_loss="proxy", init=str(first.checkpoint)
    )
    logged: list[str] = []
    tuned = train_metric(recipe=again, run_dir=tmp_path / "tuned", progress=False, log=logged.append)
    assert f"starting from {first.checkpoint}" in logged
    # every weight is the first run's (batch-norm statistics move with the one step's batch)
    a = load_checkpoint(first.checkpoint, kind="metric")["state_dict"]
    b = load_checkpoint(tuned.checkpoint, kind="metric")["state_dict"]
    weights = [k for k in a if not k.endswith(("running_mean", "running_var", "num_batches_tracked"))]
    assert len(weights) > 10
    for k in weights:
        assert torch.equal(a[k], b[k]), k
    x, y = load_split("train")
    images = [Image.fromarray(img) for img in x[:300]]
    v_first = load_embedder(f"trained:{first.checkpoint}", cache=False).embed_images(images)
    # the proxies (saved in the run state) start at their category's mean embedding
    proxies = torch.load(tmp_path / "tuned" / "state.pt", weights_only=True)["class_proxy"]["W"].numpy()
    np.testing.assert_allclose(np.linalg.norm(proxies, axis=0), 1.0, rtol=1e-5)
    present = np.unique(y[:300])
    means = np.stack([v_first[y[:300] == c].mean(axis=0) for c in present])
    means /= np.linalg.norm(means, axis=1, keepdims=True)
    # (over these 300 images, the run's 250 training items among them; random proxies: about 0)
    assert (np.einsum("cd,dc->c", means, proxies[:, present]) > 0.95).all()
    # another network or preprocessing is refused before anything is trained or written
    with pytest.raises(
        ModelError, match=r"network differs.*widths \[8, 16, 32, 32\] \(this run: \[8, 16, 32, 64\]\)"
    ):
        train_metric(
            recipe=MetricRecipe(**(TINY | dict(widths=(8, 16, 32, 64))), steps=1, init=str(first.checkpoint)),
            run_dir=tmp_path / "other",
            progress=False,
        )
    with pytest.raises(ModelError, match="preprocessing differs.*polarity"):
        train_metric(
            recipe=MetricRecipe(**(TINY | dict(polarity=True)), steps=1, init=str(first.checkpoint)),
            run_dir=tmp_path / "other",
            progress=False,
        )
    with pytest.raises(ModelError, match="not found"):
        train_metric(
            recipe=MetricRecipe(**TINY, steps=1, init=str(tmp_path / "missing.pt")),
            run_dir=tmp_path / "other",
            progress=False,
        )
    assert not (tmp_path / "other" / "state.pt").exists()


def test_resuming_with_another_recipe_names_each_option_that_differs(tmp_path):
    recipe = MetricRecipe(**TINY, steps=4, seed=2)
    train_metric(recipe=recipe, run_dir=tmp_path / "run", progress=False, stop_after=2)
    changed = MetricRecipe(**(TINY | dict(identities_per_batch=8)), steps=5, seed=2, lr=1e-3)
    with pytest.raises(LookalikeError, match="another recipe") as info:
        train_metric(recipe=changed, run_dir=tmp_path / "run", progress=False)
    message = str(info.value)
    assert "--identities 16 in that run, 8 now" in message
    assert "--lr 0.002 in that run, 0.001 now" in message
    assert "--steps 4 in that run, 5 now" in message
    assert "--seed" not in message and "--widths" not in message  # only what differs


def test_a_run_folder_file_that_is_not_a_torch_file_is_a_short_error(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "state.pt").write_text("product_id,image\n")
    with pytest.raises(LookalikeError) as info:
        train_metric(recipe=MetricRecipe(**TINY, steps=2), run_dir=run, progress=False)
    assert str(info.value) == (
        f"{run / 'state.pt'} cannot be read as a training state (not a PyTorch file); use a new --run-dir"
    )


def test_the_localizer_stage_logs_lines_when_there_are_no_progress_bars(tmp_path):
    """Output that is not a terminal gets no bars (LOOKALIKE_PROGRESS=0 here): the localizer stage,
    minutes long at the shipped settings, must still say that it runs."""
    logged: list[str] = []
    recipe = MetricRecipe(
        **(TINY | dict(localize=True, aug_size=(48, 96))),
        steps=1,
        localizer_views=100,
        localizer_steps=3,
        refine=False,
    )
    train_metric(recipe=recipe, run_dir=tmp_path / "run", progress=False, log=logged.append, heartbeat=0.02)
    assert logged[0] == "localizer: rendering 100 street views, then 3 training steps"
    beats = [line for line in logged if line.startswith("localizer: still training")]
    assert beats, logged  # the stage takes far longer than 0.02 s
    assert logged.index(beats[-1]) < next(i for i, line in enumerate(logged) if line.startswith("step 0"))
