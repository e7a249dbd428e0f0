"""Train a pair verifier (:mod:`lookalike.verifier`) for an embedder's short-lists.

Each step renders street views of ``batch`` catalog products (:class:`StreetViewAugment`), finds
each product with the embedder's localizer and embeds it, and takes the embedder's own ``pool``
nearest catalog images as the pool of hard negatives: the verifier must pick the true product out
of it plus ``negatives`` of those, a listwise cross-entropy over 1 + ``negatives`` pairs. So it
learns exactly what the embedding gets wrong.

Batches are keyed by (seed, step) and the embedder is frozen, so one background thread prepares the
next step's batch while the verifier trains on this one, and a run is deterministic for its seed.
The last ``val_products`` products are held out: every ``val_every`` steps the verifier ranks each
one's street view against the embedder's ``val_negatives`` nearest other catalog images, next to the
embedder's own ranking of the same candidates. The run directory holds ``state.pt``, saved every
``checkpoint_every`` steps; the same command resumes from it.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from lookalike.errors import LookalikeError
from lookalike.progress import progress_bar
from lookalike.train.interrupt import StopOnInterrupt
from lookalike.train.metric.augment import StreetViewAugment
from lookalike.train.metric.trainer import PRECISIONS, TrainData, _save_atomic, save_curves
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
    precision: str = "fp32"  # one of PRECISIONS; bf16 runs the verifier's passes in bfloat16 autocast
    val_products: int = 0  # held out from training (the last ones), 0: no validation
    val_negatives: int = 15  # each held-out view against this many of the embedder's nearest
    val_every: int = 500
    checkpoint_every: int = 200
    command: str = ""


def _check(r: VerifierRecipe, n: int) -> None:
    if r.steps < 1 or r.batch < 2 or r.negatives < 1:
        raise LookalikeError(
            f"steps, batch and negatives must be at least 1, 2 and 1, got {r.steps}, {r.batch}, {r.negatives}"
        )
    if r.pool <= r.negatives or r.pool >= n:
        raise LookalikeError(
            f"pool must be larger than negatives ({r.negatives}) and smaller than the catalog "
            f"({n} products), got {r.pool}"
        )
    if r.precision not in PRECISIONS:
        raise LookalikeError(f"unknown precision {r.precision!r} (choose from {', '.join(PRECISIONS)})")
    if r.val_products < 0 or r.val_products > n - r.batch:
        raise LookalikeError(
            f"val_products must be between 0 and {n - r.batch} (the catalog less one batch), "
            f"got {r.val_products}"
        )
    if r.val_products and not 1 <= r.val_negatives < n:
        raise LookalikeError(f"val_negatives must be between 1 and {n - 1}, got {r.val_negatives}")
    if r.val_every < 1 or r.checkpoint_every < 1:
        raise LookalikeError(
            f"val_every and checkpoint_every must be at least 1, got {r.val_every}, {r.checkpoint_every}"
        )


def train_verifier(
    data: TrainData,
    recipe: VerifierRecipe | None = None,
    *,
    out: str | Path,
    run_dir: str | Path | None = None,
    stop_after: int | None = None,
    progress: bool | None = None,
    log: Callable[[str], None] | None = None,
) -> tuple[Path, dict]:
    """Train and write the verifier checkpoint ``out``; returns (path, metrics).

    With ``run_dir``, the run's state is saved there every ``checkpoint_every`` steps (with the
    training curves at the end), and the same call resumes from it. ``stop_after`` stops (and
    saves) after that many steps without writing ``out``: (state path, metrics so far)."""
    from lookalike.embedders import load_embedder

    r = recipe or VerifierRecipe()
    _check(r, len(data))
    if stop_after is not None and run_dir is None:
        raise LookalikeError("stop_after needs a run_dir to save the run in")
    log = log or (lambda msg: None)
    torch.set_num_threads(r.threads)
    torch.manual_seed(r.seed)
    fast = r.precision == "bf16"
    if fast and not torch.ops.mkldnn._is_mkldnn_bf16_supported():
        log("note: this CPU has no native bfloat16; --precision bf16 will be slower than fp32 here")
    t0 = time.time()
    embedder = load_embedder(r.embedder)
    images = data.images  # a uint8 (N, H, W) array or a list of PIL images
    ids = np.asarray(data.identity_labels)
    n_train = len(data) - r.val_products
    log(f"embedding {len(images)} catalog images with {r.embedder}")
    gallery = embedder.embed_images(list(images), progress=progress)
    aug = StreetViewAugment()

    def prepare(step: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The step's street views against their product and `negatives` near misses: inputs."""
        rng = np.random.default_rng([r.seed, step])
        items = rng.choice(n_train, r.batch, replace=False)
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
        return q, catalog_inputs([images[j] for j in groups.reshape(-1)])

    val = _validation_set(r, images, ids, gallery, embedder, aug, log) if r.val_products else None
    torch.manual_seed(r.seed)  # here: loading the embedder may or may not have drawn numbers
    model = PairVerifier()
    if fast:
        model = model.to(memory_format=torch.channels_last)
    opt = torch.optim.AdamW(model.parameters(), lr=r.lr, weight_decay=r.weight_decay)
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=r.lr, total_steps=r.steps, pct_start=0.05, anneal_strategy="cos"
    )
    recipe_key = json.loads(json.dumps(asdict(r) | {"command": ""}))
    step, history, elapsed_before = 0, [], 0.0
    state_path = Path(run_dir) / "state.pt" if run_dir is not None else None
    if state_path is not None:
        state_path.parent.mkdir(parents=True, exist_ok=True)
        if state_path.exists():
            state = torch.load(state_path, map_location="cpu", weights_only=True)
            if state.get("kind") != "verifier" or state["recipe"] != recipe_key:
                raise LookalikeError(
                    f"{state_path} belongs to a run with another recipe; use a new --run-dir"
                )
            model.load_state_dict(state["model"])
            opt.load_state_dict(state["optimizer"])
            sched.load_state_dict(state["scheduler"])
            step, history, elapsed_before = state["step"], json.loads(state["history"]), state["elapsed"]
            log(f"resuming {state_path} at step {step}")

    def save_state() -> None:
        _save_atomic(
            {
                "kind": "verifier",
                "recipe": recipe_key,
                "model": model.state_dict(),
                "optimizer": opt.state_dict(),
                "scheduler": sched.state_dict(),
                "step": step,
                "history": json.dumps(history),
                "elapsed": elapsed_before + time.time() - t0,
            },
            state_path,
        )

    def validate() -> dict:
        v = _validate(model, val)
        log(
            f"step {step}: held-out views rank their product first among {r.val_negatives} near misses "
            f"{v['val_pick']:.3f} of the time (the embedding alone: {v['val_pick_embedding']:.3f})"
        )
        return v

    last_val: dict = {}
    if val is not None and step == 0 and not history:
        last_val = validate()
        history.append({"step": 0, **last_val})
    pool = ThreadPoolExecutor(max_workers=1)  # prepares the next step while this one trains
    ahead = pool.submit(prepare, step) if step < r.steps else None
    try:
        with (
            StopOnInterrupt() as interrupt,
            progress_bar("training verifier", total=r.steps, enabled=progress is not False) as advance,
        ):
            advance(step)
            while step < r.steps:
                if stop_after is not None and step >= stop_after:
                    save_state()
                    return state_path, dict(last_val)
                if interrupt.requested and state_path is not None:  # Ctrl-C: keep every finished step
                    save_state()
                    interrupt.stop(step, r.steps, state_path)
                q, c = ahead.result()
                ahead = pool.submit(prepare, step + 1) if step + 1 < r.steps else None
                if fast:
                    q = q.contiguous(memory_format=torch.channels_last)
                    c = c.contiguous(memory_format=torch.channels_last)
                model.train()
                with torch.autocast("cpu", dtype=torch.bfloat16, enabled=fast):
                    logits = model(q, c)
                logits = logits.float().reshape(r.batch, 1 + r.negatives)
                loss = F.cross_entropy(logits, torch.zeros(r.batch, dtype=torch.long))
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
                step += 1
                entry = {
                    "step": step,
                    "loss": float(loss.item()),
                    "pick": float((logits.argmax(dim=1) == 0).float().mean()),
                }
                if val is not None and (step % r.val_every == 0 or step == r.steps):
                    last_val = validate()
                    entry.update(last_val)
                history.append(entry)
                recent = history[-100:]
                advance(1, loss=float(np.mean([h["loss"] for h in recent if "loss" in h])), **last_val)
                if step % 100 == 0:
                    log(
                        f"step {step}: loss {np.mean([h['loss'] for h in recent if 'loss' in h]):.3f}, "
                        f"picks the product {np.mean([h['pick'] for h in recent if 'pick' in h]):.2f} "
                        f"of the time (chance {1 / (1 + r.negatives):.2f})"
                    )
                if state_path is not None and (step % r.checkpoint_every == 0 or step == r.steps):
                    save_state()
    finally:
        if ahead is not None:
            ahead.cancel()
        pool.shutdown(wait=True)
    trained = [h for h in history if "loss" in h][-100:]
    metrics = {
        "final_loss": round(float(np.mean([h["loss"] for h in trained])), 4),
        "final_pick_rate": round(float(np.mean([h["pick"] for h in trained])), 4),
        **{k: round(v, 4) for k, v in last_val.items()},
        "seconds": round(elapsed_before + time.time() - t0, 1),
    }
    path = Verifier(model.to(memory_format=torch.contiguous_format), out, asdict(r)).save(out, metrics)
    if run_dir is not None:
        save_curves(
            history,
            Path(run_dir) / "curves.png",
            keys=("val_pick", "val_pick_embedding"),
            title=f"held-out product first among {r.val_negatives} near misses",
            labels={"val_pick": "verifier", "val_pick_embedding": "embedding alone"},
        )
        (Path(run_dir) / "history.json").write_text(json.dumps(history))
    log(f"wrote {path} ({metrics})")
    return path, metrics


def _validation_set(r: VerifierRecipe, images, ids, gallery, embedder, aug, log) -> dict:
    """One street view of each held-out product, against the embedder's `val_negatives` nearest
    other catalog images: the verifier's inputs and the embedder's own similarities."""
    held = np.arange(len(ids) - r.val_products, len(ids))
    log(f"validating on {len(held)} held-out products, each against {r.val_negatives} near misses")
    photos = [aug(images[i], np.random.default_rng([r.seed, 2**32, int(i)])) for i in held]
    vecs, boxes = embedder.embed_and_locate(photos)
    sims = vecs @ gallery.T
    groups = np.empty((len(held), 1 + r.val_negatives), dtype=np.int64)
    for row, i in enumerate(held):
        order = np.argsort(-sims[row])
        groups[row, 0] = i
        groups[row, 1:] = order[ids[order] != ids[i]][: r.val_negatives]
    return {
        "photos": photo_inputs(photos, boxes),
        "catalog": catalog_inputs([images[j] for j in groups.reshape(-1)]),
        "groups": groups,
        "embedding_pick": float(np.mean(np.argmax(np.take_along_axis(sims, groups, axis=1), axis=1) == 0)),
    }


@torch.inference_mode()
def _validate(model: PairVerifier, val: dict) -> dict:
    """Float32, as at search time."""
    model.eval()
    k = val["groups"].shape[1]
    q = val["photos"][:, None].expand(-1, k, -1, -1, -1).reshape(-1, *val["photos"].shape[1:])
    logits = []
    for s in range(0, len(q), 1024):
        logits.append(model(q[s : s + 1024], val["catalog"][s : s + 1024]))
    picks = torch.cat(logits).reshape(-1, k).argmax(dim=1) == 0
    return {"val_pick": float(picks.float().mean()), "val_pick_embedding": val["embedding_pick"]}
