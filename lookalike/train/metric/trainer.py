"""``train_metric``: triplet training of a street-to-shop embedding, resumable and deterministic.

Everything random is keyed by (seed, step): the identities of a batch, the street views rendered for
it, the offline mining pool. The run directory holds ``state.pt`` (weights, optimiser, step, history,
mined pairs), saved every ``checkpoint_every`` steps; restarting the same command resumes from it
and ends with the same weights as an uninterrupted run.
"""

from __future__ import annotations

import json
import math
import multiprocessing
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from lookalike.devices import module_device, resolve_device
from lookalike.errors import LookalikeError, ModelError
from lookalike.evaluation.metrics import nearest_neighbours, recall_at_k
from lookalike.progress import progress_bar, progress_enabled
from lookalike.train.interrupt import StopOnInterrupt
from lookalike.train.metric.augment import StreetViewAugment
from lookalike.train.metric.model import POOLS, build_model, preprocess_images
from lookalike.train.metric.offline_miner import OfflineHardMiner
from lookalike.train.metric.samplers import CrossDomainBatch, CrossDomainSampler

#: arithmetic of the embedding network's training passes: "fp32", or "bf16" (bfloat16 autocast in a
#: channels-last layout; weights, optimiser and loss stay float32)
PRECISIONS = ("fp32", "bf16")

#: the extra class-level loss: "triplet" (semi-hard class triplets in the batch) or "proxy"
#: (pytorch-metric-learning's NormalizedSoftmaxLoss: a learned proxy vector per category)
CLASS_LOSSES = ("triplet", "proxy")

#: online miners; "all" = every triplet in the batch, "none" = offline-mined triplets only
ONLINE_MINERS = ("semihard", "hard", "random", "batchhard", "multisimilarity", "all", "none")


@dataclass
class MetricRecipe:
    """Every setting of a training run; stored in the checkpoint with the command line."""

    backbone: str = "smallcnn"
    pretrained: str | None = None  # torchvision backbones: "imagenet" or a local weights file
    widths: tuple[int, ...] = (32, 64, 128, 256)
    pool: str = "grid"  # smallcnn: "grid" (keep the 4x4 layout) or "avgmax" (global pooling)
    input_size: int = 32
    dim: int = 128
    steps: int = 3000
    identities_per_batch: int = 96
    street_per_identity: int = 2
    lr: float = 2e-3
    weight_decay: float = 1e-4
    warmup: int = 100
    margin: float = 0.2
    mining: str = "semihard"  # online miner, one of ONLINE_MINERS
    cross_domain: bool = True  # shop anchors vs street positives/negatives (else: all mixed)
    symmetric: bool = True  # also street anchors vs shop positives/negatives
    offline_every: int = 0  # 0 = no offline mining
    offline_pool: int = 4096
    offline_kind: str = "hard"
    offline_fraction: float = 0.5  # share of each batch's identities that come from mined pairs
    class_weight: float = 0.0  # weight of an extra class-level loss (needs class labels)
    class_loss: str = "triplet"  # one of CLASS_LOSSES: semi-hard triplets or one proxy per class
    aug_size: tuple[int, int] = (32, 128)
    curriculum: int = 0  # steps over which the street views ramp from easy to fully hard (0 = hard)
    difficulty: float = 1.0  # final difficulty of the street views (0..1)
    val_difficulty: float = 1.0  # difficulty of the validation street views
    val_items: int = 1000
    val_distractors: int = 4000
    val_every: int = 500
    checkpoint_every: int = 250
    limit: int | None = None  # train on the first N items only
    seed: int = 0
    threads: int = 2
    localize: bool = True  # first train a localizer; embed the item cut out of the photo
    localizer_steps: int = 2400
    localizer_views: int = 48000
    localizer_precision: str = "fp32"  # the localizer's and refiner's training passes (PRECISIONS)
    refine: bool = True  # also train the localizer's refiner (two more looks around the first box)
    crop_jitter: float = 1.0  # scale of the box jitter applied to training crops
    polarity: bool = True  # flip products darker than their surroundings to light-on-dark
    precision: str = "fp32"  # one of PRECISIONS; bf16 halves a step on CPUs with AVX512-BF16 / AMX
    init: str | None = None  # start from this metric checkpoint's network ("default" or a path)
    command: str = ""

    def arch(self, in_channels: int = 1) -> dict:
        arch = {
            "backbone": self.backbone,
            "widths": list(self.widths),
            "in_channels": in_channels,
            "dim": self.dim,
            "hidden": 512,
        }
        if self.pool != "avgmax":  # older checkpoints have no "pool": they are avgmax
            arch["pool"] = self.pool
        return arch

    def preprocess(self) -> dict:
        pre = {"size": self.input_size, "channels": 1, "normalise": "per_image"}
        if self.polarity:
            pre["polarity"] = "auto"
        return pre


@dataclass
class TrainData:
    """Shop images (uint8 (N, H, W) grey array or list of PIL images) with their product identity
    and (optionally) category labels; ``street_photos`` maps an item index to real customer photos,
    used instead of synthetic street views when given."""

    images: object
    identity_labels: np.ndarray
    class_labels: np.ndarray | None = None
    street_photos: dict[int, list] = field(default_factory=dict)
    skipped_images: int = 0  # unreadable images left out when loading the source

    def __len__(self) -> int:
        return len(self.identity_labels)


def fashion_mnist_data(limit: int | None = None) -> TrainData:
    from lookalike.datasets.fashion_mnist import load_split

    images, labels = load_split("train")
    n = len(images) if limit is None else min(limit, len(images))
    return TrainData(images[:n], np.arange(n), labels[:n].astype(np.int64))


@dataclass
class TrainResult:
    checkpoint: Path
    metrics: dict
    history: list[dict]
    curves: Path | None
    seconds: float


class _Trainer:
    def __init__(self, data: TrainData, recipe: MetricRecipe, run_dir: Path):
        self.data, self.r, self.run_dir = data, recipe, run_dir
        self.localizer = None  # set by train_metric when the recipe localizes
        self.refiner = None  # set with it when the recipe refines
        self.refine: dict = {}
        self.pre = recipe.preprocess()
        n = len(data)
        # hold out validation identities (never trained on), chosen by the seed
        perm = np.random.default_rng([recipe.seed, 99]).permutation(n)
        n_val = min(recipe.val_items, n // 5)
        self.val_items = np.sort(perm[:n_val])
        self.train_items = np.sort(perm[n_val:])
        self.val_gallery = np.sort(
            np.concatenate([self.val_items, perm[n_val : n_val + recipe.val_distractors]])
        )
        self.sampler = CrossDomainSampler(
            data.identity_labels[self.train_items],
            recipe.identities_per_batch,
            recipe.street_per_identity,
            seed=recipe.seed,
        )
        self.offline = (
            OfflineHardMiner(
                recipe.offline_every, recipe.offline_pool, recipe.offline_kind, margin=recipe.margin
            )
            if recipe.offline_every > 0
            else None
        )
        # sampler item position -> identity index (to build batches from mined pairs)
        self.identity_of_item = np.full(len(self.train_items), -1, dtype=np.int64)
        self.identity_of_item[self.sampler.identity_items] = np.arange(self.sampler.n_identities)
        self._build_losses()

    # -- data -------------------------------------------------------------------------------
    def image(self, item: int):
        return self.data.images[int(item)]

    def to_tensor(self, views: list, boxes: list | None = None) -> torch.Tensor:
        """Photos -> network input. With a localizer the item is cut out of each photo first: at its
        known (jittered) box for synthetic views, where the localizer finds it otherwise."""
        if self.localizer is not None:
            from lookalike.embedders._localizer import crop_items, find_items

            views = [v if isinstance(v, Image.Image) else Image.fromarray(np.asarray(v)) for v in views]
            boxes = list(boxes) if boxes is not None else [None] * len(views)
            unknown = [i for i, b in enumerate(boxes) if b is None]
            if unknown:
                found = find_items(self.localizer, [views[i] for i in unknown], self.refiner, **self.refine)
                for i, b in zip(unknown, found, strict=True):
                    boxes[i] = b
            views = crop_items(views, np.array(boxes, dtype=np.float64), self.r.input_size)
        return preprocess_images(views, self.pre)

    def _jitter(self, box, rng: np.random.Generator, scale: float = 1.0) -> tuple:
        """A true box moved by about the localizer's error, so the network learns from crops like
        the ones it will get at search time (without running the localizer on every batch)."""
        cx, cy, side, angle = box
        j = self.r.crop_jitter * scale
        return (
            cx + rng.normal(0, 0.06 * j) * side,
            cy + rng.normal(0, 0.06 * j) * side,
            side * float(np.exp(rng.normal(0, 0.08 * j))),
            angle + rng.normal(0, 4.0 * j),
        )

    def shop_tensor(self, items: np.ndarray, key: tuple | None = None) -> torch.Tensor:
        images = [self.image(i) for i in items]
        if self.localizer is None:
            return self.to_tensor(images)
        boxes = []
        for j, img in enumerate(images):
            h, w = np.asarray(img).shape[:2]
            box = (w / 2, h / 2, float(max(w, h)), 0.0)
            if key is not None:  # training batches: jitter like the localizer's small errors
                box = self._jitter(box, np.random.default_rng([self.r.seed, *key, j, 1]), 0.5)
            boxes.append(box)
        return self.to_tensor(images, boxes)

    def difficulty(self, step: int) -> float:
        r = self.r
        if r.curriculum <= 0 or step >= r.curriculum:
            return r.difficulty
        return r.difficulty * (0.2 + 0.8 * step / r.curriculum)

    def street_tensor(
        self, items: np.ndarray, key: tuple, difficulty: float | None = None, true_boxes: bool = True
    ) -> torch.Tensor:
        """Street views of ``items``; ``true_boxes=False`` makes the localizer find every item (as at
        search time, used for validation)."""
        aug = StreetViewAugment(
            size=tuple(self.r.aug_size), difficulty=self.r.difficulty if difficulty is None else difficulty
        )
        views, boxes = [], []
        for j, item in enumerate(items):
            rng = np.random.default_rng([self.r.seed, *key, j])
            photos = self.data.street_photos.get(int(item))
            if photos and rng.random() < 0.5:
                views.append(photos[int(rng.integers(len(photos)))])
                boxes.append(None)
            else:
                views.append(aug(self.image(item), rng))
                boxes.append(self._jitter(aug.last_params["box"], rng) if true_boxes else None)
        return self.to_tensor(views, boxes)

    def render(self, step: int, batch: CrossDomainBatch) -> tuple[torch.Tensor, torch.Tensor]:
        return self.shop_tensor(batch.shop, (step, 0)), self.street_tensor(
            batch.street, (step, 1), self.difficulty(step)
        )

    # -- losses -----------------------------------------------------------------------------
    def _build_losses(self) -> None:
        from pytorch_metric_learning import distances, losses, miners

        r = self.r
        if r.mining not in ONLINE_MINERS:
            raise LookalikeError(f"unknown mining {r.mining!r} (choose from {', '.join(ONLINE_MINERS)})")
        dist = distances.LpDistance(power=2, normalize_embeddings=True)
        self.loss_fn = losses.TripletMarginLoss(margin=r.margin, distance=dist)
        self.miner = {
            "semihard": lambda: miners.TripletMarginMiner(
                margin=r.margin, distance=dist, type_of_triplets="semihard"
            ),
            "hard": lambda: miners.TripletMarginMiner(
                margin=r.margin, distance=dist, type_of_triplets="hard"
            ),
            "batchhard": lambda: miners.BatchHardMiner(distance=dist),
            "multisimilarity": lambda: miners.MultiSimilarityMiner(epsilon=0.1),
            "random": lambda: None,
            "all": lambda: None,
            "none": lambda: None,
        }[r.mining]()
        if r.mining == "none" and r.offline_every <= 0:
            raise LookalikeError("mining 'none' trains on offline-mined triplets only: set offline_every > 0")
        self.class_miner = miners.TripletMarginMiner(
            margin=r.margin, distance=dist, type_of_triplets="semihard"
        )
        if r.class_loss not in CLASS_LOSSES:
            choices = ", ".join(CLASS_LOSSES)
            raise LookalikeError(f"unknown class loss {r.class_loss!r} (choose from {choices})")
        self.class_proxy = None
        if r.class_loss == "proxy" and r.class_weight > 0 and self.data.class_labels is not None:
            n_classes = int(np.max(self.data.class_labels)) + 1
            self.class_proxy = losses.NormalizedSoftmaxLoss(n_classes, r.dim, temperature=0.05)

    def _mine(self, emb, labels, ref=None, ref_labels=None):
        """Online triplets (anchor rows in ``emb``, positive/negative rows in ``ref`` or ``emb``)."""
        from pytorch_metric_learning.utils import loss_and_miner_utils as lmu

        mining = self.r.mining
        if mining == "random":
            return lmu.get_random_triplet_indices(labels, ref_labels=ref_labels, t_per_anchor=1)
        if mining == "all":
            return lmu.get_all_triplets_indices(labels, ref_labels)
        if mining == "none":  # offline-mined triplets only
            empty = torch.zeros(0, dtype=torch.long, device=emb.device)
            return empty, empty, empty
        idx = self.miner(emb, labels, ref, ref_labels)
        if len(idx) == 4:  # pair miners (MultiSimilarity): turn their pairs into triplets
            idx = lmu.convert_to_triplets(idx, labels, ref_labels)
        return idx

    def loss(self, shop_emb, street_emb, batch: CrossDomainBatch, mined_pairs: np.ndarray | None):
        """Triplet loss of one batch: online-mined triplets plus the offline-mined ones in it."""
        r = self.r
        dev = shop_emb.device
        sl = torch.as_tensor(batch.shop_labels, device=dev)
        tl = torch.as_tensor(batch.street_labels, device=dev)
        pairs = self._mined_rows(batch, mined_pairs, dev)  # (anchor row, negative row) in the shop block
        k = r.street_per_identity
        if r.cross_domain:
            # shop anchors; street positives and negatives
            explicit = None if pairs is None else (pairs[0], pairs[0] * k, pairs[1] * k)
            idx = self._merge(self._mine(shop_emb, sl, street_emb, tl), explicit)
            loss = self._triplet(shop_emb, sl, idx, street_emb, tl)
            if r.symmetric:  # street anchors; shop positives and negatives
                explicit = None if pairs is None else (pairs[0] * k, pairs[0], pairs[1])
                idx2 = self._merge(self._mine(street_emb, tl, shop_emb, sl), explicit)
                loss = (loss + self._triplet(street_emb, tl, idx2, shop_emb, sl)) / 2
        else:
            emb = torch.cat([shop_emb, street_emb])
            lab = torch.cat([sl, tl])
            n = len(sl)  # street rows come after the shop rows
            explicit = None if pairs is None else (pairs[0], n + pairs[0] * k, n + pairs[1] * k)
            idx = self._merge(self._mine(emb, lab), explicit)
            loss = self._triplet(emb, lab, idx)
        if r.class_weight > 0 and self.data.class_labels is not None:
            emb = torch.cat([shop_emb, street_emb])
            cl = torch.as_tensor(
                self.data.class_labels[np.concatenate([batch.shop, batch.street])], device=dev
            )
            if self.class_proxy is not None:
                loss = loss + r.class_weight * self.class_proxy(emb, cl)
            else:
                loss = loss + r.class_weight * self.loss_fn(emb, cl, self.class_miner(emb, cl))
        return loss

    def _triplet(self, emb, labels, idx, ref=None, ref_labels=None):
        if len(idx[0]) == 0:
            return emb.sum() * 0.0
        return self.loss_fn(emb, labels, idx, ref, ref_labels)

    @staticmethod
    def _merge(online, explicit):
        if explicit is None:
            return online
        return tuple(torch.cat([x, y]) for x, y in zip(online, explicit, strict=True))

    @staticmethod
    def _mined_rows(batch: CrossDomainBatch, mined_pairs: np.ndarray | None, device=None):
        """The offline-mined (anchor, negative) pairs present in this batch, as rows of the shop block."""
        if mined_pairs is None or len(mined_pairs) == 0:
            return None
        row = {int(item): i for i, item in enumerate(batch.shop)}
        a, n = [], []
        for anchor, neg in mined_pairs:
            ia, ineg = row.get(int(anchor)), row.get(int(neg))
            if ia is not None and ineg is not None:
                a.append(ia)
                n.append(ineg)
        if not a:
            return None
        return torch.tensor(a, device=device), torch.tensor(n, device=device)

    # -- offline mining ----------------------------------------------------------------------
    @torch.no_grad()
    def embed(self, model, x: torch.Tensor, bs: int = 1024) -> np.ndarray:
        model.eval()
        dev = module_device(model)
        out = np.concatenate([model(x[s : s + bs].to(dev)).cpu().numpy() for s in range(0, len(x), bs)])
        model.train()
        return out

    def mine_offline(self, model, step: int) -> np.ndarray:
        """(n, 2) array of (anchor item, hard-negative item), both training items."""
        rng = np.random.default_rng([self.r.seed, step, 3])
        ids = rng.choice(
            self.sampler.n_identities,
            size=min(self.offline.pool_size, self.sampler.n_identities),
            replace=False,
        )
        items = self.sampler.identity_items[ids]
        train_items = self.train_items[items]
        shop = self.embed(model, self.shop_tensor(train_items))
        street = self.embed(model, self.street_tensor(train_items, (step, 2), self.difficulty(step)))
        pairs = self.offline.mine(shop, street, rng)
        return items[pairs]  # positions in the sampler's item list

    def batch_for(self, step: int, mined: np.ndarray | None) -> tuple[CrossDomainBatch, np.ndarray | None]:
        base = self.sampler.batch(step)
        if mined is None or len(mined) == 0:
            batch = base
            pairs_in = None
        else:
            rng = np.random.default_rng([self.r.seed, step, 5])
            n_pairs = max(1, int(self.sampler.p * self.r.offline_fraction) // 2)
            chosen = mined[rng.choice(len(mined), size=min(n_pairs, len(mined)), replace=False)]
            items = list(dict.fromkeys([int(x) for x in chosen.reshape(-1)]))
            for it in base.identities:
                if len(items) >= self.sampler.p:
                    break
                if int(it) not in items:
                    items.append(int(it))
            batch = self.sampler.batch(step, identities=self.identity_of_item[np.array(items)])
            pairs_in = chosen
        # map sampler positions to dataset item indices
        t = self.train_items
        batch = CrossDomainBatch(
            t[batch.identities], t[batch.shop], t[batch.street], batch.shop_labels, batch.street_labels
        )
        if pairs_in is not None:
            pairs_in = t[pairs_in]
        return batch, pairs_in

    # -- validation --------------------------------------------------------------------------
    def validate(self, model) -> dict:
        if not hasattr(self, "_val_q"):
            self._val_q = self.street_tensor(
                self.val_items, (10**9, 0), self.r.val_difficulty, true_boxes=False
            )
            self._val_g = self.shop_tensor(self.val_gallery)
        q = self.embed(model, self._val_q)
        g = self.embed(model, self._val_g)
        nn_idx = nearest_neighbours(q, g, 10)
        ranked = self.val_gallery[nn_idx]
        ids = self.data.identity_labels
        out = {f"val_{k}": v for k, v in recall_at_k(ids[ranked], ids[self.val_items], (1, 10)).items()}
        if self.data.class_labels is not None:
            cl = self.data.class_labels
            out["val_class_R@1"] = recall_at_k(cl[ranked], cl[self.val_items], (1,))["R@1"]
        return out


#: the trainer a forked render process works for (set in the parent just before the fork)
_RENDER_TRAINER: _Trainer | None = None


def _render_init() -> None:
    torch.set_num_threads(1)  # each render process is one core's worth of work


def _render_remote(step: int, batch: CrossDomainBatch) -> tuple[torch.Tensor, torch.Tensor]:
    assert _RENDER_TRAINER is not None
    return _RENDER_TRAINER.render(step, batch)


class _Renderer:
    """Renders the batches of the coming steps ahead of the training loop.

    ``workers == 0``: one background thread renders the next step's batch while the network trains
    on this one (enough on a 2-core machine, where the network needs the cores too). ``workers > 0``:
    that many forked processes render up to ``2 * workers`` steps ahead, which is what keeps a GPU
    busy. A batch depends only on (seed, step) and the offline-mined pairs, so the order in which
    renders finish never changes what the network sees.
    """

    def __init__(self, tr: _Trainer, workers: int):
        self.tr = tr
        self.pending: dict[int, Future] = {}
        self.depth = 1
        self.remote = False
        if workers > 0 and "fork" in multiprocessing.get_all_start_methods():
            global _RENDER_TRAINER
            _RENDER_TRAINER = tr
            self.pool = ProcessPoolExecutor(
                workers, mp_context=multiprocessing.get_context("fork"), initializer=_render_init
            )
            self.depth, self.remote = 2 * workers, True
        else:
            self.pool = ThreadPoolExecutor(max_workers=1)

    def _submit(self, step: int, batch: CrossDomainBatch) -> Future:
        if self.remote:
            return self.pool.submit(_render_remote, step, batch)
        return self.pool.submit(self.tr.render, step, batch)

    def get(self, step: int, batch: CrossDomainBatch) -> tuple[torch.Tensor, torch.Tensor]:
        fut = self.pending.pop(step, None)
        return fut.result() if fut is not None else self.tr.render(step, batch)

    def prefetch(self, step: int, mined: np.ndarray | None) -> None:
        """Queue the steps after ``step``, up to the next offline mining round (which changes them)."""
        tr = self.tr
        for nxt in range(step + 1, min(step + 1 + self.depth, tr.r.steps)):
            if tr.offline is not None and tr.offline.due(nxt):
                break
            if nxt not in self.pending:
                self.pending[nxt] = self._submit(nxt, tr.batch_for(nxt, mined)[0])

    def clear(self) -> None:
        for fut in self.pending.values():
            fut.cancel()
        self.pending.clear()

    def close(self) -> None:
        self.clear()
        self.pool.shutdown(wait=True, cancel_futures=True)


def _lr(r: MetricRecipe, step: int) -> float:
    if step < r.warmup:
        return r.lr * (step + 1) / r.warmup
    t = (step - r.warmup) / max(1, r.steps - r.warmup)
    return r.lr * 0.5 * (1 + math.cos(math.pi * min(1.0, t)))


def train_metric(
    data: TrainData | None = None,
    recipe: MetricRecipe | None = None,
    *,
    run_dir: str | Path = "runs/metric",
    out: str | Path | None = None,
    stop_after: int | None = None,
    progress: bool | None = None,
    log: Callable[[str], None] | None = None,
    device: str | None = None,
    workers: int = 0,
    heartbeat: float = 60.0,
) -> TrainResult:
    """Train an embedding and write ``out`` (default ``run_dir/model.pt``), a lookalike checkpoint.

    Re-running with the same ``run_dir`` resumes from ``run_dir/state.pt``. ``stop_after`` stops
    (after saving state) once that step is reached, which simulates an interruption.

    ``device`` runs the networks (``auto``: a CUDA GPU when there is one; see
    :mod:`lookalike.devices`); the street views are always rendered on the CPU, by ``workers``
    processes when ``workers > 0`` (else by one background thread). Neither changes which batches
    a run sees: they are keyed by (seed, step). On a GPU, results are reproducible up to cuDNN's
    floating-point order.

    When stderr is not a terminal (no progress bars), ``log`` gets a line every ``heartbeat``
    seconds during the localizer stage, whose own loop does not log.
    """
    from lookalike.checkpoint import save_checkpoint

    r = recipe or MetricRecipe()
    if workers < 0:
        raise LookalikeError(f"workers must be 0 (a render thread) or more processes, got {workers}")
    dev = resolve_device(device)  # before any data loads or files are written
    data = data or fashion_mnist_data(r.limit)
    if r.limit is not None and len(data) > r.limit:
        data = TrainData(
            data.images[: r.limit],
            data.identity_labels[: r.limit],
            None if data.class_labels is None else data.class_labels[: r.limit],
            data.street_photos,
        )
    if len(data) < 10:
        raise LookalikeError(f"need at least 10 training items, got {len(data)}")
    if r.identities_per_batch > len(data):
        raise LookalikeError(
            f"identities per batch ({r.identities_per_batch}, --identities) is more than the "
            f"{len(data)} products to train on"
        )
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    out = Path(out) if out else run_dir / "model.pt"
    torch.set_num_threads(r.threads)
    torch.manual_seed(r.seed)
    if dev.type == "cuda":
        torch.backends.cudnn.benchmark = False
        torch.backends.cudnn.deterministic = True
    t0 = time.time()

    if r.backbone == "smallcnn" and r.pool not in POOLS:  # before the localizer spends minutes
        raise ModelError(f"unknown pooling {r.pool!r} (choose from {', '.join(POOLS)})")
    for name, value in (("precision", r.precision), ("localizer precision", r.localizer_precision)):
        if value not in PRECISIONS:
            raise LookalikeError(f"unknown {name} {value!r} (choose from {', '.join(PRECISIONS)})")
    init = _init_checkpoint(r) if r.init else None  # a wrong file fails before the localizer trains
    state_path = run_dir / "state.pt"
    state = _resume_state(state_path, r) if state_path.exists() else None  # so does another recipe
    fast = r.precision == "bf16"
    if fast and dev.type == "cpu" and log and not torch.ops.mkldnn._is_mkldnn_bf16_supported():
        log("note: this CPU has no native bfloat16; --precision bf16 will be slower than fp32 here")
    tr = _Trainer(data, r, run_dir)
    localizer_extra = None
    if r.localize:
        # the localizer draws its own bars on a terminal; elsewhere it is silent for minutes
        with _heartbeat(None if progress_enabled() else log, "localizer", heartbeat):
            tr.localizer, localizer_extra = _localizer_for(tr, run_dir, log, dev, workers)
        ref = localizer_extra.get("refiner")
        if ref:
            from lookalike.embedders._localizer import build_localizer

            tr.refiner = build_localizer(ref["arch"], ref["state_dict"])
            tr.refine = {"passes": ref["passes"], "margin": ref["margin"]}
    model = build_model(r.arch(), pretrained=r.pretrained).to(dev)
    if fast:
        model = model.to(memory_format=torch.channels_last)
    groups = [{"params": list(model.parameters())}]
    if tr.class_proxy is not None:  # the class proxies learn with the network, without weight decay
        tr.class_proxy.to(dev)
        groups.append({"params": list(tr.class_proxy.parameters()), "weight_decay": 0.0})
    opt = torch.optim.AdamW(groups, lr=r.lr, weight_decay=r.weight_decay)
    step, history, mined = 0, [], None
    elapsed_before = 0.0
    if state is not None:
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        if tr.class_proxy is not None:
            tr.class_proxy.load_state_dict(state["class_proxy"])
        step, history = state["step"], json.loads(state["history"])
        mined = state["mined"].numpy() if state.get("mined") is not None else None
        elapsed_before = state.get("elapsed", 0.0)
        if log:
            log(f"resuming {state_path} at step {step}/{r.steps}")
    elif init is not None:
        _start_from(tr, model, init, log)

    def save_state() -> None:
        tmp = state_path.with_suffix(".tmp")
        torch.save(
            {
                "recipe": json.loads(json.dumps(asdict(r) | {"command": ""}, default=list)),
                "model": model.state_dict(),
                "optimizer": opt.state_dict(),
                "step": step,
                "history": json.dumps(history),
                "mined": None if mined is None else torch.as_tensor(mined),
                "class_proxy": None if tr.class_proxy is None else tr.class_proxy.state_dict(),
                "elapsed": elapsed_before + time.time() - t0,
            },
            tmp,
        )
        tmp.replace(state_path)

    model.train()
    renderer = _Renderer(tr, workers)
    last_val: dict = {}
    if step == 0 and not history:  # the untrained start, for the curves
        last_val = tr.validate(model)
        history.append({"step": 0, **last_val})
        if log:
            log("step 0 " + " ".join(f"{k.removeprefix('val_')}={v:.3f}" for k, v in last_val.items()))
    with (
        StopOnInterrupt() as interrupt,
        progress_bar("training (metric)", total=r.steps, enabled=progress is not False) as advance,
    ):
        advance(step)
        while step < r.steps:
            if tr.offline is not None and tr.offline.due(step):
                mined = tr.mine_offline(model, step)
                renderer.clear()  # batches after a mining round contain its pairs
            batch, pairs = tr.batch_for(step, mined)
            shop_x, street_x = renderer.get(step, batch)
            renderer.prefetch(step, mined)
            for g in opt.param_groups:
                g["lr"] = _lr(r, step)
            x = torch.cat([shop_x, street_x]).to(dev, non_blocking=True)
            if fast:
                x = x.contiguous(memory_format=torch.channels_last)
            with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=fast):
                emb = model(x)
            emb = emb.float()
            loss = tr.loss(emb[: len(shop_x)], emb[len(shop_x) :], batch, pairs)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
            entry = {"step": step, "loss": float(loss.item()), "lr": _lr(r, step - 1)}
            if step % r.val_every == 0 or step == r.steps:
                last_val = tr.validate(model)
                entry.update(last_val)
                if log:
                    shown = " ".join(f"{k.removeprefix('val_')}={v:.3f}" for k, v in last_val.items())
                    log(f"step {step}/{r.steps} loss {entry['loss']:.4f} {shown} ({time.time() - t0:.0f}s)")
            history.append(entry)
            advance(1, loss=entry["loss"], **{k.removeprefix("val_"): v for k, v in last_val.items()})
            if step % r.checkpoint_every == 0 or step == r.steps:
                save_state()
            if stop_after is not None and step >= stop_after and step < r.steps:
                save_state()
                renderer.close()
                return TrainResult(state_path, last_val, history, None, elapsed_before + time.time() - t0)
            if interrupt.requested and step < r.steps:  # Ctrl-C: keep every finished step
                save_state()
                renderer.close()
                interrupt.stop(step, r.steps, state_path)
    renderer.close()
    seconds = elapsed_before + time.time() - t0
    metrics = {k: v for k, v in history[-1].items() if k.startswith("val_")}
    metrics["train_seconds"] = round(seconds, 1)
    metrics["train_device"] = str(dev)
    save_checkpoint(
        out,
        kind="metric",
        state_dict=model.state_dict(),
        arch=r.arch(),
        preprocess=r.preprocess(),
        recipe=json.loads(json.dumps(asdict(r), default=list)),
        metrics=metrics,
        extra={"localizer": localizer_extra} if localizer_extra else None,
        half=True,  # float16 on disk: half the file, embeddings within ~1e-3
    )
    curves = save_curves(history, run_dir / "curves.png")
    (run_dir / "history.json").write_text(json.dumps(history))
    return TrainResult(out, metrics, history, curves, seconds)


#: recipe fields whose command-line option is not ``--`` plus the field name with dashes
_OPTION_NAMES = {"identities_per_batch": "--identities", "cross_domain": "--cross-domain/--mixed"}


def _option(field_name: str) -> str:
    return _OPTION_NAMES.get(field_name, "--" + field_name.replace("_", "-"))


def _load_torch_file(path: Path, what: str):
    """``torch.load`` of one of the run's own files, a short error (never torch's advice) if it fails."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001
        from lookalike.checkpoint import unreadable_reason

        raise LookalikeError(
            f"{path} cannot be read as {what} ({unreadable_reason(path, exc)}); use a new --run-dir"
        ) from None


def _resume_state(state_path: Path, r: MetricRecipe) -> dict:
    """The interrupted run's state, refused (naming each option that differs) for another recipe."""
    state = _load_torch_file(state_path, "a training state")
    ours = json.loads(json.dumps(asdict(r) | {"command": ""}, default=list))
    theirs = state.get("recipe") if isinstance(state, dict) else None
    if not isinstance(theirs, dict) or "model" not in state:
        raise LookalikeError(f"{state_path} is not a metric training state; use a new --run-dir")
    if theirs != ours:
        diff = "; ".join(
            f"{_option(k)} {_shown(theirs[k]) if k in theirs else '(not set)'} in that run, "
            f"{_shown(ours[k]) if k in ours else '(not set)'} now"
            for k in sorted(set(theirs) | set(ours))
            if theirs.get(k, _MISSING) != ours.get(k, _MISSING)
        )
        raise LookalikeError(
            f"{state_path} belongs to a run with another recipe: {diff}. A run resumes only with the "
            "options it started with: rerun with those, or use a new --run-dir"
        )
    return state


_MISSING = object()


def _shown(value) -> str:
    if isinstance(value, list):
        return ",".join(str(v) for v in value)
    return "none" if value is None else str(value).lower() if isinstance(value, bool) else str(value)


def _init_checkpoint(r: MetricRecipe) -> dict:
    """The checkpoint ``r.init`` names, checked against the run: same network, same preprocessing."""
    from lookalike.checkpoint import load_checkpoint
    from lookalike.embedders import ALIASES

    path = Path(ALIASES.get(r.init, r.init).removeprefix("trained:"))  # "default" -> the shipped file
    payload = load_checkpoint(path, kind="metric")
    for what, theirs, ours in (
        ("network", payload["arch"], r.arch()),
        ("preprocessing", payload["preprocess"], r.preprocess()),
    ):
        if theirs != ours:
            diff = ", ".join(
                f"{k} {theirs.get(k)!r} (this run: {ours.get(k)!r})"
                for k in sorted(set(theirs) | set(ours))
                if theirs.get(k) != ours.get(k)
            )
            raise ModelError(f"cannot start from {path}: its {what} differs from this run's: {diff}")
    payload["path"] = str(path)
    return payload


@torch.no_grad()
def _start_from(tr: _Trainer, model, init: dict, log) -> None:
    """Load the network of ``init``; the class proxies (not stored in checkpoints) start at the
    categories' mean shop embeddings, so the first steps refine the space instead of tearing it up."""
    model.load_state_dict(init["state_dict"])
    if tr.class_proxy is not None:
        labels = tr.data.class_labels[tr.train_items]
        rng = np.random.default_rng([tr.r.seed, 7])
        pick = rng.choice(len(tr.train_items), size=min(10_000, len(tr.train_items)), replace=False)
        emb = tr.embed(model, tr.shop_tensor(tr.train_items[pick]))
        proxies = tr.class_proxy.W  # (dim, classes); a category with no training item keeps its own
        for c in np.unique(labels[pick]):
            mean = emb[labels[pick] == c].mean(axis=0)
            if (norm := np.linalg.norm(mean)) > 0:
                proxies[:, c] = torch.as_tensor(mean / norm, device=proxies.device)
    if log:
        log(f"starting from {init['path']}")


@contextmanager
def _heartbeat(log, what: str, every: float) -> Iterator[None]:
    """``log`` a "still running" line every ``every`` seconds until the block ends (None: silent)."""
    if log is None or every <= 0:
        yield
        return
    stop = threading.Event()
    t0 = time.time()

    def beat() -> None:
        while not stop.wait(every):
            log(f"{what}: still training ({time.time() - t0:.0f}s so far)")

    thread = threading.Thread(target=beat, name="lookalike-heartbeat", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def _localizer_for(
    tr: _Trainer, run_dir: Path, log, device=None, workers: int = 0
) -> tuple[torch.nn.Module, dict]:
    """Train the run's localizer (and its refiner) on the training items (on ``device``), or load
    them from an interrupted run. The trainer gets them on the CPU: it only finds items in real
    street photos, inside the render workers."""
    from lookalike.embedders._localizer import build_localizer
    from lookalike.train.metric.localizer import (
        LocalizerRecipe,
        replay_rng,
        same_recipe,
        train_localizer,
        train_refiner,
    )

    r = tr.r
    lr = LocalizerRecipe(
        views=r.localizer_views,
        steps=r.localizer_steps,
        refine=r.refine,
        refine_views=r.localizer_views,
        refine_steps=r.localizer_steps,
        seed=r.seed,
        workers=max(r.threads, workers),
        precision=r.localizer_precision,
    )
    path = run_dir / "localizer.pt"
    trained = False
    if path.exists():
        saved = _load_torch_file(path, "a localizer")
        if not isinstance(saved, dict) or not same_recipe(saved.get("recipe") or {}, lr):
            raise LookalikeError(
                f"{path} was trained with other localizer settings than this run's; use a new --run-dir"
            )
        model = build_localizer(saved["arch"], saved["state_dict"])
    else:
        trained = True
        if log:
            log(
                f"localizer: rendering {lr.views} street views, then {lr.steps} training steps"
                + (" (and as many for its refiner)" if lr.refine else "")
            )
        model, metrics = train_localizer(
            tr.data.images, tr.train_items, tr.val_items, lr, log=log, device=device
        )
        saved = {
            "arch": {"widths": list(model.widths)},
            "state_dict": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()},
            "metrics": metrics,
            "recipe": json.loads(json.dumps(asdict(lr), default=list)),
        }
        _save_atomic(saved, path)
    if lr.refine and not saved.get("refiner"):
        trained = True
        refiner, metrics = train_refiner(
            tr.data.images, tr.train_items, tr.val_items, model, lr, log=log, device=device
        )
        saved["refiner"] = {
            "arch": {"widths": list(refiner.widths)},
            "state_dict": {k: v.detach().cpu().clone() for k, v in refiner.state_dict().items()},
            "margin": lr.refine_margin,
            "passes": lr.refine_passes,
            "metrics": metrics,
        }
        _save_atomic(saved, path)
    if not trained:  # both loaded: start the embedding network where a run that trained them would
        replay_rng(lr)
    return model.cpu(), saved


def _save_atomic(obj, path: Path) -> None:
    tmp = path.with_suffix(".tmp")
    torch.save(obj, tmp)
    tmp.replace(path)


def save_curves(
    history: list[dict],
    path: Path,
    keys: tuple[str, ...] = ("val_R@1", "val_R@10", "val_class_R@1"),
    title: str = "validation (street -> shop)",
    labels: dict[str, str] | None = None,
) -> Path:
    """Loss (smoothed) and the validation metrics ``keys`` (named by ``labels``) against the step,
    as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = np.array([h["step"] for h in history if "loss" in h])
    loss = np.array([h["loss"] for h in history if "loss" in h])
    w = max(1, len(loss) // 50)
    smooth = np.convolve(loss, np.ones(w) / w, mode="valid")
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(9, 3.2))
    a1.plot(steps[: len(smooth)] + w - 1, smooth)
    a1.set_xlabel("step")
    a1.set_ylabel("loss (smoothed)")
    a1.set_title("training loss")
    for key in keys:
        pts = sorted((h["step"], h[key]) for h in history if key in h)
        if pts:
            xs, ys = zip(*pts, strict=True)
            a2.plot(xs, ys, marker="o", label=(labels or {}).get(key, key.removeprefix("val_")))
    a2.set_xlabel("step")
    a2.set_ylim(0, 1)
    a2.set_title(title)
    a2.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path
