"""Device selection: ``auto`` / ``cpu`` / ``cuda[:N]`` / ``mps`` for embedders and training.

On a machine without a GPU the CUDA tests check the refusal; on one with a GPU they check that the
GPU gives the CPU's embeddings.
"""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch

from lookalike.config import get_settings
from lookalike.devices import resolve_device
from lookalike.embedders import load_embedder
from lookalike.errors import ModelError
from lookalike.train.metric import MetricRecipe, train_metric

HAS_CUDA = torch.cuda.is_available()
HAS_MPS = bool(getattr(torch.backends, "mps", None) and torch.backends.mps.is_available())


def test_cpu_and_auto():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("  CPU ") == torch.device("cpu")
    want = "cuda" if HAS_CUDA else "mps" if HAS_MPS else "cpu"
    assert resolve_device("auto").type == want
    assert resolve_device("").type == want  # empty means auto


@pytest.mark.parametrize("spec", ["tpu", "cuda:x", "gpu0"])
def test_unknown_devices_are_refused_by_name(spec):
    with pytest.raises(ModelError, match=f"unknown device '{spec}'"):
        resolve_device(spec)


def test_meta_device_is_unsupported():
    with pytest.raises(ModelError, match="unsupported device 'meta'"):
        resolve_device("meta")


@pytest.mark.skipif(HAS_CUDA, reason="this machine has a CUDA GPU")
def test_cuda_without_a_gpu_says_why():
    with pytest.raises(ModelError, match="no CUDA GPU") as info:
        resolve_device("cuda")
    assert torch.__version__ in str(info.value)


@pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA GPU")
def test_cuda_index_beyond_the_machine_is_refused():
    n = torch.cuda.device_count()
    with pytest.raises(ModelError, match=f"has {n} CUDA GPU"):
        resolve_device(f"cuda:{n}")


def test_embedders_read_the_device_setting(monkeypatch, fmnist_test):
    monkeypatch.setenv("LOOKALIKE_DEVICE", "cpu")
    get_settings.cache_clear()
    emb = load_embedder("default", cache=False)
    assert emb.device == torch.device("cpu")
    assert emb.localizer is not None and next(emb.localizer.parameters()).device.type == "cpu"
    monkeypatch.setenv("LOOKALIKE_DEVICE", "bogus")
    get_settings.cache_clear()
    with pytest.raises(ModelError, match="unknown device 'bogus'"):
        load_embedder("default")
    # an explicit device wins over the setting, and the cache keeps one model per device
    a = load_embedder("default", device="cpu")
    assert load_embedder("default", device="cpu") is a


@pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA GPU")
def test_gpu_embeddings_match_cpu(fmnist_test):
    from PIL import Image

    from lookalike.train.metric.augment import StreetViewAugment

    images, _ = fmnist_test
    shop = [Image.fromarray(images[i]) for i in range(64)]
    aug = StreetViewAugment(size=(64, 192))
    street = [aug(images[i], np.random.default_rng(i)) for i in range(64)]
    for name in ("default", "pixels"):
        cpu = load_embedder(name, device="cpu", cache=False).embed_images(shop + street)
        gpu = load_embedder(name, device="cuda", cache=False).embed_images(shop + street)
        assert (cpu * gpu).sum(axis=1).min() > 0.999, name


def test_training_refuses_a_missing_device_before_writing_anything(tmp_path):
    spec = "mps" if HAS_CUDA else "cuda"
    if HAS_CUDA and HAS_MPS:
        pytest.skip("both CUDA and MPS are present")
    with pytest.raises(ModelError, match=f"device '{spec}'"):
        train_metric(recipe=MetricRecipe(steps=1, limit=50), run_dir=tmp_path / "run", device=spec)
    assert not (tmp_path / "run").exists()


def test_cli_names_the_bad_device(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "lookalike.cli", "train", "metric", "--device", "tpu", "--steps", "1"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert proc.returncode != 0
    assert "unknown device 'tpu'" in proc.stderr
    assert not (tmp_path / "runs").exists()
