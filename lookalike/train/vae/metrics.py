"""Measuring a latent model: reconstruction, active units, kNN accuracy, interpolation smoothness, MIG.

Each function takes plain arrays or a model, so the benchmark and the tests share them.
"""

from __future__ import annotations

import numpy as np
import torch

from lookalike.train.vae.data import to_tensor
from lookalike.train.vae.losses import kl_per_dim
from lookalike.train.vae.models import VAE


@torch.no_grad()
def encode_means(model: VAE, images: np.ndarray, batch_size: int = 1000) -> np.ndarray:
    """Encoder means E[z|x] for uint8 images (n, h, w[, c]) -> float32 (n, latent_dim)."""
    model.eval()
    out = []
    for start in range(0, len(images), batch_size):
        x = to_tensor(images[start : start + batch_size], model.in_channels, model.resolution)
        out.append(model.encode(x)[0].numpy())
    return np.concatenate(out).astype(np.float32)


@torch.no_grad()
def reconstruction_mse(model: VAE, images: np.ndarray, batch_size: int = 1000) -> float:
    """Mean squared error per pixel (0-1 scale) of decode(E[z|x]) against x."""
    model.eval()
    total, n = 0.0, 0
    for start in range(0, len(images), batch_size):
        x = to_tensor(images[start : start + batch_size], model.in_channels, model.resolution)
        total += ((model.decode(model.encode(x)[0]) - x) ** 2).mean(dim=(1, 2, 3)).sum().item()
        n += len(x)
    return total / n


@torch.no_grad()
def mean_kl_per_dim(model: VAE, images: np.ndarray, batch_size: int = 1000) -> np.ndarray | None:
    """Average KL(q(z|x) || N(0,1)) per latent dimension; None for WAE (deterministic encoder)."""
    if model.model_type == "wae-mmd":
        return None
    model.eval()
    total = None
    for start in range(0, len(images), batch_size):
        x = to_tensor(images[start : start + batch_size], model.in_channels, model.resolution)
        kl = kl_per_dim(*model.encode(x)).sum(0)
        total = kl if total is None else total + kl
    return (total / len(images)).numpy()


def active_units(means: np.ndarray, threshold: float = 0.01) -> int:
    """Burda et al.'s active units: dimensions whose Cov_x(E[z|x]) exceeds ``threshold``."""
    return int((np.var(means, axis=0) > threshold).sum())


def knn_accuracy(
    train: np.ndarray, train_labels: np.ndarray, test: np.ndarray, test_labels: np.ndarray, k: int = 5
) -> float:
    """Class accuracy of a k-nearest-neighbour vote (Euclidean), test points against the train set."""
    from sklearn.neighbors import KNeighborsClassifier

    clf = KNeighborsClassifier(n_neighbors=k, algorithm="brute", n_jobs=1)
    clf.fit(train, train_labels)
    return float((clf.predict(test) == test_labels).mean())


def _step_stats(paths: np.ndarray) -> tuple[float, float]:
    """paths (pairs, steps, pixels) -> (mean RMS change per step, mean of max-step / mean-step)."""
    diffs = np.sqrt(((paths[:, 1:] - paths[:, :-1]) ** 2).mean(axis=2))  # (pairs, steps-1)
    mean = diffs.mean(axis=1)
    ratio = diffs.max(axis=1) / np.maximum(mean, 1e-12)
    return float(mean.mean()), float(ratio.mean())


@torch.no_grad()
def interpolation_smoothness(
    model: VAE, images: np.ndarray, *, pairs: int = 200, steps: int = 10, seed: int = 0
) -> dict[str, float]:
    """Decode straight latent paths between random pairs; compare with a straight pixel cross-fade.

    ``mean_step`` is the mean RMS pixel change between consecutive images (a cross-fade spreads the
    change evenly, the minimum possible); ``max_over_mean`` is the largest step over the mean step
    (1.0 = perfectly even, large = the path jumps).
    """
    model.eval()
    rng = np.random.default_rng(seed)
    idx = rng.choice(len(images), size=(pairs, 2), replace=len(images) < 2 * pairs)
    a = to_tensor(images[idx[:, 0]], model.in_channels, model.resolution)
    b = to_tensor(images[idx[:, 1]], model.in_channels, model.resolution)
    za, zb = model.encode(a)[0], model.encode(b)[0]
    t = torch.linspace(0, 1, steps).view(1, steps, 1)
    z = (1 - t) * za.unsqueeze(1) + t * zb.unsqueeze(1)  # (pairs, steps, d)
    decoded = model.decode(z.reshape(pairs * steps, -1)).reshape(pairs, steps, -1).numpy()
    fade = ((1 - t) * a.flatten(1).unsqueeze(1) + t * b.flatten(1).unsqueeze(1)).numpy()
    m_mean, m_ratio = _step_stats(decoded)
    f_mean, f_ratio = _step_stats(fade)
    return {
        "steps": steps,
        "model_mean_step": m_mean,
        "model_max_over_mean": m_ratio,
        "crossfade_mean_step": f_mean,
        "crossfade_max_over_mean": f_ratio,
    }


# -- disentanglement on synthetic known factors ---------------------------------------------------

FACTORS = {
    "rotation": np.linspace(-40, 40, 5),  # degrees
    "scale": np.linspace(0.6, 1.1, 5),
    "shift": np.linspace(-5, 5, 5),  # pixels, horizontal
    "brightness": np.linspace(0.35, 1.0, 5),
}


def synthetic_factor_images(
    images: np.ndarray, n: int = 5000, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Apply random rotation / scale / shift / brightness (5 levels each) to random catalog images.

    Returns (uint8 images (n, h, w), factor level indices (n, 4), factor names).
    """
    import torchvision.transforms.functional as TF

    rng = np.random.default_rng(seed)
    names = list(FACTORS)
    levels = np.stack([rng.integers(0, len(FACTORS[f]), size=n) for f in names], axis=1)
    base = images[rng.integers(0, len(images), size=n)]
    x = torch.as_tensor(np.asarray(base)).float().unsqueeze(1) / 255.0
    out = torch.empty_like(x)
    for i in range(n):
        rot, scale, shift, bright = (FACTORS[f][levels[i, j]] for j, f in enumerate(names))
        img = TF.affine(x[i], angle=float(rot), translate=[int(shift), 0], scale=float(scale), shear=[0.0])
        out[i] = img * float(bright)
    return (out[:, 0] * 255).round().clamp(0, 255).to(torch.uint8).numpy(), levels, names


def _discretise(codes: np.ndarray, bins: int = 20) -> np.ndarray:
    out = np.zeros_like(codes, dtype=np.int64)
    for j in range(codes.shape[1]):
        edges = np.histogram(codes[:, j], bins)[1][1:-1]
        out[:, j] = np.digitize(codes[:, j], edges)
    return out


def mutual_information_gap(codes: np.ndarray, factors: np.ndarray, bins: int = 20) -> dict[str, float]:
    """MIG (Chen et al. 2018): for each factor, the gap between the two latents that know most about it,
    divided by the factor's entropy; averaged over factors. Returns the mean and the per-factor gaps."""
    from sklearn.metrics import mutual_info_score

    disc = _discretise(codes, bins)
    gaps = []
    for k in range(factors.shape[1]):
        mi = np.array([mutual_info_score(factors[:, k], disc[:, j]) for j in range(disc.shape[1])])
        entropy = mutual_info_score(factors[:, k], factors[:, k])
        top = np.sort(mi)[::-1]
        second = top[1] if len(top) > 1 else 0.0
        gaps.append((top[0] - second) / entropy if entropy > 0 else 0.0)
    return {"mig": float(np.mean(gaps)), "per_factor": [float(g) for g in gaps]}


def _entropy(p: np.ndarray, base: int, axis: int) -> np.ndarray:
    p = np.clip(p, 1e-12, 1.0)
    return -(p * np.log(p) / np.log(base)).sum(axis=axis)


def dci(
    codes: np.ndarray, factors: np.ndarray, *, seed: int = 0, train_fraction: float = 0.8
) -> dict[str, float]:
    """DCI (Eastwood & Williams 2018) with random-forest importances: disentanglement (each latent explains
    one factor), completeness (each factor lives in one latent), informativeness (held-out accuracy)."""
    from sklearn.ensemble import RandomForestClassifier

    n_codes, n_factors = codes.shape[1], factors.shape[1]
    split = int(len(codes) * train_fraction)
    importance = np.zeros((n_codes, n_factors))
    accuracy = []
    for k in range(n_factors):
        forest = RandomForestClassifier(
            n_estimators=30, max_depth=8, max_features=None, min_samples_leaf=20, random_state=seed, n_jobs=1
        )
        forest.fit(codes[:split], factors[:split, k])
        importance[:, k] = forest.feature_importances_
        accuracy.append(forest.score(codes[split:], factors[split:, k]))
    per_code = importance / np.maximum(importance.sum(axis=1, keepdims=True), 1e-12)
    disentangled = 1.0 - _entropy(per_code, n_factors, axis=1)
    weight = importance.sum(axis=1) / max(importance.sum(), 1e-12)
    per_factor = importance / np.maximum(importance.sum(axis=0, keepdims=True), 1e-12)
    complete = 1.0 - _entropy(per_factor, max(n_codes, 2), axis=0)
    return {
        "disentanglement": float((weight * disentangled).sum()),
        "completeness": float(complete.mean()),
        "informativeness": float(np.mean(accuracy)),
    }
