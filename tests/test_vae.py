"""Latent variable models: losses against slow re-computations, each model learning, the trainer's outputs,
the checkpoint as an embedder, and the metrics used by bench/bench_vae.py."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from PIL import Image

from lookalike.checkpoint import load_checkpoint
from lookalike.errors import InvalidRequest, ModelError
from lookalike.train.vae import VAETrainConfig, build_model, train_vae
from lookalike.train.vae.data import to_tensor
from lookalike.train.vae.losses import imq_kernel, kl_per_dim, mmd_imq, reconstruction_loss
from lookalike.train.vae.metrics import (
    active_units,
    dci,
    encode_means,
    interpolation_smoothness,
    knn_accuracy,
    mutual_information_gap,
    reconstruction_mse,
    synthetic_factor_images,
)

TINY = {"channels": (8, 16), "hidden": 64, "latent_dim": 4}


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """Small models on a shared 2-core machine: one torch thread avoids spin-waiting on busy cores."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def fmnist_train():
    from lookalike.datasets.fashion_mnist import load_split

    return load_split("train")


# -- losses ------------------------------------------------------------------------------------------
def test_kl_per_dim_matches_torch_distributions():
    torch.manual_seed(0)
    mu, logvar = torch.randn(5, 3), torch.randn(5, 3)
    q = torch.distributions.Normal(mu, (0.5 * logvar).exp())
    p = torch.distributions.Normal(torch.zeros(5, 3), torch.ones(5, 3))
    assert torch.allclose(kl_per_dim(mu, logvar), torch.distributions.kl_divergence(q, p), atol=1e-5)


def test_mmd_imq_matches_a_slow_double_loop():
    torch.manual_seed(1)
    z, p = torch.randn(6, 3) + 0.5, torch.randn(6, 3)
    scales = (0.5, 1.0, 2.0)

    def k(a, b):
        return sum(2 * 3 * s / (2 * 3 * s + float(((a - b) ** 2).sum())) for s in scales)

    n = 6
    zz = sum(k(z[i], z[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    pp = sum(k(p[i], p[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    zp = sum(k(z[i], p[j]) for i in range(n) for j in range(n)) / (n * n)
    assert math.isclose(float(mmd_imq(z, p, scales)), zz + pp - 2 * zp, rel_tol=1e-4)
    assert float(imq_kernel(z[:1], z[:1], scales)) == pytest.approx(len(scales))


def test_mmd_is_small_for_the_prior_and_large_for_a_shifted_cloud():
    g = torch.Generator().manual_seed(2)
    prior = torch.randn(400, 8, generator=g)
    same = torch.randn(400, 8, generator=g)
    shifted = torch.randn(400, 8, generator=g) + 2.0
    assert abs(float(mmd_imq(same, prior))) < 0.02
    assert float(mmd_imq(shifted, prior)) > 10 * abs(float(mmd_imq(same, prior)))


def test_reconstruction_loss_sums_pixels_per_example():
    logits = torch.zeros(2, 1, 4, 4)
    target = torch.full((2, 1, 4, 4), 0.5)
    # BCE of p=0.5 is log 2 per pixel
    assert torch.allclose(reconstruction_loss(logits, target), torch.full((2,), 16 * math.log(2)))
    assert torch.allclose(reconstruction_loss(logits, target, "gaussian"), torch.zeros(2))
    with pytest.raises(ValueError):
        reconstruction_loss(logits, target, "poisson")


def test_capacity_rises_linearly_then_stays():
    arch = {"model": "beta-vae", "latent_dim": 4, "capacity": 20.0, "capacity_steps": 100, **_tiny_arch()}
    m = build_model(arch)
    assert m.capacity_at(0) == 0.0
    assert m.capacity_at(50) == pytest.approx(10.0)
    assert m.capacity_at(1000) == pytest.approx(20.0)


def _tiny_arch():
    return {"channels": [8, 16], "hidden": 64}


# -- models ------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "arch",
    [
        {"model": "vae"},
        {"model": "beta-vae", "beta": 4.0},
        {"model": "beta-vae", "capacity": 5.0, "capacity_steps": 20},
        {"model": "wae-mmd", "reg_weight": 100.0},
    ],
    ids=["vae", "beta-vae", "beta-vae-C", "wae-mmd"],
)
def test_each_model_lowers_its_loss_in_a_few_steps(arch, fmnist_train):
    torch.manual_seed(0)
    x = to_tensor(fmnist_train[0][:128], 1, 28)
    model = build_model({"latent_dim": 4, **_tiny_arch(), **arch})
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)

    def loss_at(step):
        torch.manual_seed(123)  # the same noise for the before/after comparison
        with torch.no_grad():
            return float(model.objective(x, step)["loss"])

    before = loss_at(0)
    for step in range(25):
        terms = model.objective(x, step)
        opt.zero_grad()
        terms["loss"].backward()
        opt.step()
    after = loss_at(25)
    assert after < 0.8 * before, (before, after)


def test_models_decode_to_the_input_shape_at_other_resolutions():
    for res, channels in [(32, (8, 16)), (64, (8, 16, 16))]:
        arch = {"model": "vae", "latent_dim": 3, "resolution": res, "in_channels": 3, "channels": channels}
        m = build_model(arch)
        mu, logvar = m.encode(torch.rand(2, 3, res, res))
        assert mu.shape == (2, 3) and logvar.shape == (2, 3)
        assert m.decode(mu).shape == (2, 3, res, res)
    with pytest.raises(ValueError, match="multiple of 4"):
        build_model({"model": "vae", "latent_dim": 3, "resolution": 30, "channels": (8, 16)})
    with pytest.raises(ValueError, match="unknown latent model"):
        build_model({"model": "gan", "latent_dim": 3})


# -- trainer + embedder ----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def trained(tmp_path_factory, fmnist_train):
    out = tmp_path_factory.mktemp("vae-run")
    config = VAETrainConfig(model="beta-vae", beta=2.0, epochs=2, batch_size=64, threads=1, **TINY)
    return train_vae(fmnist_train[0][:400], out, config, progress=False)


def test_trainer_writes_checkpoint_gif_and_curves(trained):
    assert trained.checkpoint.is_file() and trained.curves.is_file()
    with Image.open(trained.gif) as gif:
        assert gif.n_frames == 2  # one frame per epoch
    payload = load_checkpoint(trained.checkpoint, kind="vae")
    assert payload["arch"]["model"] == "beta-vae" and payload["arch"]["latent_dim"] == 4
    assert payload["recipe"]["epochs"] == 2
    assert len(payload["metrics"]["kl_per_dim"]) == 4
    assert payload["metrics"]["mse"] < 0.2
    epochs = trained.history["epochs"]
    assert epochs[1]["recon"] < epochs[0]["recon"]
    with pytest.raises(ModelError, match="not 'metric'"):
        load_checkpoint(trained.checkpoint, kind="metric")


def test_checkpoint_is_an_embedder_that_can_decode(trained, fmnist_test):
    from lookalike.embedders import load_embedder

    emb = load_embedder(f"vae:{trained.checkpoint}", cache=False)
    assert emb.dim == 4 and emb.gaussian_prior
    images = [Image.fromarray(a).resize((56, 56)).convert("RGB") for a in fmnist_test[0][:6]]
    vecs = emb.embed_images(images)
    assert vecs.shape == (6, 4)
    assert np.allclose(np.linalg.norm(vecs, axis=1), 1.0, atol=1e-5)
    raw = emb.encode(images)
    assert np.allclose(raw / np.linalg.norm(raw, axis=1, keepdims=True), vecs, atol=1e-5)
    decoded = emb.decode(raw)
    assert len(decoded) == 6 and decoded[0].size == (28, 28) and decoded[0].mode == "L"
    with pytest.raises(ModelError, match="checkpoint path"):
        load_embedder("vae", cache=False)
    with pytest.raises(ModelError, match="not found"):
        load_embedder("vae:/nonexistent/model.pt", cache=False)


def test_bad_training_settings_are_refused(fmnist_train):
    with pytest.raises(InvalidRequest, match="latent_dim"):
        train_vae(fmnist_train[0][:50], "unused", VAETrainConfig(latent_dim=0))
    with pytest.raises(InvalidRequest, match="unknown latent model"):
        train_vae(fmnist_train[0][:50], "unused", VAETrainConfig(model="gan"))


def test_train_vae_cli(tmp_path):
    from typer.testing import CliRunner

    from lookalike.cli import app

    out = tmp_path / "run"
    result = CliRunner().invoke(
        app,
        ["train", "vae", "--model", "wae-mmd", "--limit", "200", "--epochs", "1", "-z", "3",
         "--conv-channels", "8,16", "--batch-size", "50", "--out", str(out), "--threads", "1"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert (out / "model.pt").is_file() and (out / "epochs.gif").is_file() and (out / "losses.png").is_file()
    assert load_checkpoint(out / "model.pt")["arch"]["model"] == "wae-mmd"
    assert f"use it: lookalike index fashion-mnist --model vae:{out / 'model.pt'}" in " ".join(
        result.output.split()
    )
    bad = CliRunner().invoke(app, ["train", "vae", "--data", str(tmp_path / "nothing"), "--out", str(out)])
    assert bad.exit_code != 0 and "not a folder" in str(bad.exception)
    test = CliRunner().invoke(
        app, ["train", "vae", "--data", "fashion-mnist:test", "--out", str(tmp_path / "t")]
    )
    assert test.exit_code != 0 and "test split is for evaluation only" in str(test.exception)
    assert not (tmp_path / "t").exists()  # refused before any work
    from lookalike.errors import SourceError
    from lookalike.train.vae.data import load_training_images

    with pytest.raises(SourceError, match="evaluation only"):  # the library refuses it too
        load_training_images("fashion-mnist:test", channels=1, resolution=28)


def test_train_on_a_folder_of_colour_photos_at_another_resolution(product_photos, tmp_path):
    from typer.testing import CliRunner

    from lookalike.cli import app
    from lookalike.embedders import load_embedder

    out = tmp_path / "rgb"
    result = CliRunner().invoke(
        app,
        ["train", "vae", "--data", str(product_photos), "--rgb", "--resolution", "32",
         "--conv-channels", "8,16", "-z", "3", "--epochs", "1", "--batch-size", "16", "--out", str(out),
         "--threads", "1"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    # the hint names the folder it trained on, not Fashion-MNIST
    assert f"use it: lookalike index {product_photos} --model vae:" in " ".join(result.output.split())
    payload = load_checkpoint(out / "model.pt", kind="vae")
    assert payload["preprocess"] == {"resolution": 32, "channels": 3, "mode": "RGB", "scale": "0-1"}
    emb = load_embedder(f"vae:{out / 'model.pt'}", cache=False)
    photo = Image.open(next(product_photos.rglob("*.png")))
    decoded = emb.decode(emb.encode([photo]))[0]
    assert decoded.mode == "RGB" and decoded.size == (32, 32)


# -- metrics ---------------------------------------------------------------------------------------
def test_active_units_counts_dimensions_that_vary():
    rng = np.random.default_rng(0)
    means = np.stack([rng.normal(0, 1, 500), rng.normal(0, 0.05, 500), np.zeros(500)], axis=1)
    assert active_units(means) == 1
    assert active_units(means, threshold=0.001) == 2


def test_mig_is_high_for_an_axis_aligned_code_and_low_for_noise():
    rng = np.random.default_rng(0)
    factors = rng.integers(0, 5, size=(2000, 3))
    aligned = factors + rng.normal(0, 0.1, size=factors.shape)
    noise = rng.normal(size=(2000, 3))
    assert mutual_information_gap(aligned, factors)["mig"] > 0.8
    assert mutual_information_gap(noise, factors)["mig"] < 0.05
    # two latents that both copy a factor leave no gap
    copied = np.concatenate([aligned[:, :1], aligned[:, :1] + rng.normal(0, 0.1, (2000, 1))], axis=1)
    assert mutual_information_gap(copied, factors[:, :1])["mig"] < 0.3


def test_dci_prefers_one_latent_per_factor_over_mixtures():
    rng = np.random.default_rng(0)
    factors = rng.integers(0, 5, size=(2000, 3))
    aligned = dci(factors + rng.normal(0, 0.1, size=factors.shape), factors)
    mixed = dci(factors @ rng.normal(size=(3, 3)) + rng.normal(0, 0.1, size=(2000, 3)), factors)
    noise = dci(rng.normal(size=(2000, 3)), factors)
    assert aligned["disentanglement"] > 0.9 and aligned["completeness"] > 0.9
    assert mixed["disentanglement"] < aligned["disentanglement"] - 0.3
    assert aligned["informativeness"] > 0.95 and noise["informativeness"] < 0.35
    assert noise["disentanglement"] < 0.1


def test_synthetic_factor_images_change_the_pictures(fmnist_test):
    images, levels, names = synthetic_factor_images(fmnist_test[0][:50], n=40, seed=1)
    assert images.shape == (40, 28, 28) and images.dtype == np.uint8
    assert levels.shape == (40, 4) and names == ["rotation", "scale", "shift", "brightness"]
    dim = levels[:, 3] == 0  # darkest brightness level
    assert images[dim].mean() < images[levels[:, 3] == 4].mean()


def test_model_metrics_on_a_trained_model(trained, fmnist_train, fmnist_test):
    model = trained.model
    x_test = fmnist_test[0][:300]
    mu = encode_means(model, x_test)
    assert mu.shape == (300, 4)
    assert 0 < reconstruction_mse(model, x_test) < 0.2
    train_mu = encode_means(model, fmnist_train[0][:1000])
    acc = knn_accuracy(train_mu, fmnist_train[1][:1000], mu, fmnist_test[1][:300])
    assert acc > 0.3  # far above the 0.1 of chance, even for a 4-d model trained for seconds
    s = interpolation_smoothness(model, x_test, pairs=20, steps=6)
    assert s["crossfade_max_over_mean"] == pytest.approx(1.0, abs=1e-3)
    assert s["model_mean_step"] > 0 and s["model_max_over_mean"] >= 1.0
