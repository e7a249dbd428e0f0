"""Loss terms for latent variable models, per example (or per dimension); reducing is the caller's job."""

from __future__ import annotations

import torch
import torch.nn.functional as F

#: IMQ kernel scales from the WAE paper (Tolstikhin et al. 2018), multiplied by 2 * dim * sigma^2
IMQ_SCALES = (0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0)


def reconstruction_loss(
    logits: torch.Tensor, target: torch.Tensor, likelihood: str = "bernoulli"
) -> torch.Tensor:
    """Negative log-likelihood of ``target`` (0-1 pixels) per example, summed over pixels.

    ``bernoulli``: binary cross-entropy on logits (the usual choice for grey product shots);
    ``gaussian``: squared error of sigmoid(logits) (unit variance, constants dropped).
    """
    if likelihood == "bernoulli":
        per_pixel = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    elif likelihood == "gaussian":
        per_pixel = 0.5 * (torch.sigmoid(logits) - target) ** 2
    else:
        raise ValueError(f"unknown likelihood {likelihood!r} (bernoulli or gaussian)")
    return per_pixel.flatten(1).sum(1)


def kl_per_dim(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, exp(logvar)) || N(0, 1)) for every example and latent dimension: shape (n, d)."""
    return 0.5 * (mu.pow(2) + logvar.exp() - 1.0 - logvar)


def imq_kernel(a: torch.Tensor, b: torch.Tensor, scales=IMQ_SCALES) -> torch.Tensor:
    """Inverse multiquadric kernel k(x, y) = sum_s C_s / (C_s + |x - y|^2), C_s = 2 d s (prior variance 1)."""
    d = a.shape[1]
    dist2 = torch.cdist(a, b).pow(2)
    out = torch.zeros_like(dist2)
    for s in scales:
        c = 2.0 * d * s
        out = out + c / (c + dist2)
    return out


def mmd_imq(z: torch.Tensor, z_prior: torch.Tensor, scales=IMQ_SCALES) -> torch.Tensor:
    """Unbiased estimate of MMD^2 between encoded codes ``z`` and prior samples, IMQ kernel."""
    n = z.shape[0]
    if n < 2:
        raise ValueError("MMD needs at least 2 examples per batch")
    off_diag = 1.0 - torch.eye(n, device=z.device, dtype=z.dtype)
    k_zz = (imq_kernel(z, z, scales) * off_diag).sum() / (n * (n - 1))
    k_pp = (imq_kernel(z_prior, z_prior, scales) * off_diag).sum() / (n * (n - 1))
    k_zp = imq_kernel(z, z_prior, scales).mean()
    return k_zz + k_pp - 2.0 * k_zp
