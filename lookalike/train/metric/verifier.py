"""Train a pair verifier (:mod:`lookalike.verifier`) for an embedder's short-lists.

Each step renders street views of ``batch`` catalog products (:class:`StreetViewAugment`), finds
each product with the embedder's localizer and embeds it, and takes the embedder's own ``pool``
nearest catalog images as the pool of hard negatives: the verifier must pick the true product out
of it plus ``negatives`` of those, a listwise cross-entropy over 1 + ``negatives`` pairs. So it
learns exactly what the embedding gets wrong. Batches are keyed by (seed, step): a run is
deterministic for its seed.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from lookalike.errors import LookalikeError
from lookalike.progress import progress_bar
from lookalike.train.metric.augment import StreetViewAugment
from lookalike.train.metric.trainer import TrainData
from lookalike.verifier import PairVerifier, Verifier, catalog_inputs, photo_inputs


@dataclass
class VerifierRecipe:
    steps: int = 1200
    batch: int = 48  # products (street views) per step
    negatives: int = 7  # per street view, drawn from the embedder's `pool` nearest catalog images
    pool: int = 40
    lr: float = 1e-3
    weight_decay: float = 1e-4
    seed: int = 0
    threads: int = 2
    embedder: str = "default"
    command: str = ""


def train_verifier(
    data: TrainData,
    recipe: VerifierRecipe | None = None,
    *,
    out: str | Path,
    progress: bool | None = None,
    log: Callable[[str], None] | None = None,
) -> tuple[Path, dict]:
    """Train and write the verifier checkpoint ``out``; returns (path, metrics)."""
    from lookalike.embedders import load_embedder

    r = recipe or VerifierRecipe()
    if r.steps < 1 or r.batch < 2 or r.negatives < 1:
        raise LookalikeError(
            f"steps, batch and negatives must be at least 1, 2 and 1, got {r.steps}, {r.batch}, {r.negatives}"
        )
    if r.pool <= r.negatives or r.pool >= len(data):
        raise LookalikeError(
            f"pool must be larger than negatives ({r.negatives}) and smaller than the catalog "
            f"({len(data)} products), got {r.pool}"
        )
    log = log or (lambda msg: None)
    torch.set_num_threads(r.threads)
    torch.manual_seed(r.seed)
    t0 = time.time()
    embedder = load_embedder(r.embedder)
    images = data.images  # a uint8 (N, H, W) array or a list of PIL images
    log(f"embedding {len(images)} catalog images with {r.embedder}")
    gallery = embedder.embed_images(list(images), progress=progress)
    model = PairVerifier()
    opt = torch.optim.AdamW(model.parameters(), lr=r.lr, weight_decay=r.weight_decay)
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=r.lr, total_steps=r.steps, pct_start=0.05, anneal_strategy="cos"
    )
    aug = StreetViewAugment()
    ids = np.asarray(data.identity_labels)
    losses: list[float] = []
    accs: list[float] = []
    with progress_bar("training verifier", total=r.steps, enabled=progress is not False) as advance:
        for step in range(r.steps):
            rng = np.random.default_rng([r.seed, step])
            items = rng.choice(len(images), r.batch, replace=False)
            photos = [aug(images[i], np.random.default_rng([r.seed, step, int(i)])) for i in items]
            vecs, boxes = embedder.embed_and_locate(photos)
            sims = vecs @ gallery.T
            near = np.argpartition(-sims, r.pool, axis=1)[:, : r.pool + 1]
            groups = np.empty((r.batch, 1 + r.negatives), dtype=np.int64)
            for row, i in enumerate(items):
                cand = near[row][ids[near[row]] != ids[i]][: r.pool]
                groups[row, 0] = i
                groups[row, 1:] = rng.choice(cand, r.negatives, replace=False)
            q = photo_inputs(photos, boxes)
            q = q[:, None].expand(-1, 1 + r.negatives, -1, -1, -1).reshape(-1, *q.shape[1:])
            c = catalog_inputs([images[j] for j in groups.reshape(-1)])
            model.train()
            logits = model(q, c).reshape(r.batch, 1 + r.negatives)
            loss = F.cross_entropy(logits, torch.zeros(r.batch, dtype=torch.long))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            losses.append(loss.item())
            accs.append(float((logits.argmax(dim=1) == 0).float().mean()))
            advance(1, loss=f"{np.mean(losses[-50:]):.3f}")
            if (step + 1) % 100 == 0:
                log(
                    f"step {step + 1}: loss {np.mean(losses[-100:]):.3f}, "
                    f"picks the product {np.mean(accs[-100:]):.2f} of the time "
                    f"(chance {1 / (1 + r.negatives):.2f})"
                )
    metrics = {
        "final_loss": round(float(np.mean(losses[-100:])), 4),
        "final_pick_rate": round(float(np.mean(accs[-100:])), 4),
        "seconds": round(time.time() - t0, 1),
    }
    path = Verifier(model, out, asdict(r)).save(out, metrics)
    log(f"wrote {path} ({metrics})")
    return path, metrics
