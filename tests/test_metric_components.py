"""Metric-learning parts: loss wiring, cross-domain sampler, offline miner, street-view augmentation."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from lookalike.datasets.fashion_mnist import load_split
from lookalike.train.metric import (
    CrossDomainSampler,
    MetricRecipe,
    OfflineHardMiner,
    StreetViewAugment,
    TrainData,
)
from lookalike.train.metric.trainer import _Trainer


def _tiny_data(n: int = 60) -> TrainData:
    x, y = load_split("train")
    return TrainData(x[:n], np.arange(n), y[:n].astype(np.int64))


def _slow_all_triplets_loss(anchors, a_lab, refs, r_lab, margin):
    """Average of the non-zero max(0, d(a,p) - d(a,n) + margin), squared L2, by hand."""
    losses = []
    for i, a in enumerate(anchors):
        for j, p in enumerate(refs):
            if r_lab[j] != a_lab[i]:
                continue
            for k, n in enumerate(refs):
                if r_lab[k] == a_lab[i]:
                    continue
                d_ap = float(((a - p) ** 2).sum())
                d_an = float(((a - n) ** 2).sum())
                losses.append(max(0.0, d_ap - d_an + margin))
    nonzero = [v for v in losses if v > 0]
    return sum(nonzero) / len(nonzero)


def test_loss_wiring_matches_pytorch_metric_learning_and_hand_computation(tmp_path):
    from pytorch_metric_learning import distances, losses, miners

    torch.manual_seed(0)
    shop = torch.nn.functional.normalize(torch.randn(6, 8), dim=1)
    street = torch.nn.functional.normalize(torch.randn(12, 8), dim=1)
    recipe = MetricRecipe(mining="all", symmetric=False, street_per_identity=2, margin=0.3)
    tr = _Trainer(_tiny_data(), recipe, tmp_path)
    batch = tr.sampler.batch(0, identities=np.arange(6))
    sl, tl = torch.as_tensor(batch.shop_labels), torch.as_tensor(batch.street_labels)
    ours = tr.loss(shop, street, batch, None)
    dist = distances.LpDistance(power=2, normalize_embeddings=True)
    pml = losses.TripletMarginLoss(margin=0.3, distance=dist)(shop, sl, None, street, tl)
    hand = _slow_all_triplets_loss(shop.numpy(), sl.numpy(), street.numpy(), tl.numpy(), 0.3)
    assert float(ours) == pytest.approx(float(pml), rel=1e-5)
    assert float(ours) == pytest.approx(hand, rel=1e-4)

    # semi-hard mining: same value as pytorch-metric-learning's miner + loss, in both directions
    recipe = MetricRecipe(mining="semihard", symmetric=True, street_per_identity=2, margin=0.3)
    tr = _Trainer(_tiny_data(), recipe, tmp_path)
    ours = tr.loss(shop, street, batch, None)
    miner = miners.TripletMarginMiner(margin=0.3, distance=dist, type_of_triplets="semihard")
    loss_fn = losses.TripletMarginLoss(margin=0.3, distance=dist)
    expected = (
        loss_fn(shop, sl, miner(shop, sl, street, tl), street, tl)
        + loss_fn(street, tl, miner(street, tl, shop, sl), shop, sl)
    ) / 2
    assert float(ours) == pytest.approx(float(expected), rel=1e-5)

    # the class-level terms, on the categories of the batch's shop and street images together
    emb = torch.cat([shop, street])
    cl = torch.as_tensor(tr.data.class_labels[np.concatenate([batch.shop, batch.street])])
    recipe = MetricRecipe(
        mining="semihard", symmetric=True, street_per_identity=2, margin=0.3, class_weight=0.5
    )
    tr = _Trainer(_tiny_data(), recipe, tmp_path)
    assert tr.class_proxy is None  # "triplet" is the default class loss
    class_term = loss_fn(emb, cl, miner(emb, cl))
    assert float(class_term) > 0
    assert float(tr.loss(shop, street, batch, None)) == pytest.approx(
        float(expected + 0.5 * class_term), rel=1e-5
    )
    recipe = MetricRecipe(
        mining="semihard",
        symmetric=True,
        street_per_identity=2,
        margin=0.3,
        class_weight=0.5,
        class_loss="proxy",
    )
    tr = _Trainer(_tiny_data(), recipe, tmp_path)
    assert tr.class_proxy.W.shape == (128, 10)  # one learned proxy per Fashion-MNIST category
    tr.class_proxy.W.data = torch.nn.functional.pad(torch.eye(8), (0, 2, 0, 0))  # 8-d test vectors
    proxy = losses.NormalizedSoftmaxLoss(10, 8, temperature=0.05)
    proxy.W.data = tr.class_proxy.W.data.clone()
    proxy_term = proxy(emb, cl)
    assert proxy_term.item() > 0
    assert tr.loss(shop, street, batch, None).item() == pytest.approx(
        (expected + 0.5 * proxy_term).item(), rel=1e-5
    )
    # by hand: cross-entropy of cosine(embedding, proxy) / temperature
    logits = torch.nn.functional.normalize(emb, dim=1) @ torch.nn.functional.normalize(proxy.W.data, dim=0)
    by_hand = torch.nn.functional.cross_entropy(logits / 0.05, cl)
    assert proxy_term.item() == pytest.approx(float(by_hand), rel=1e-5)


def test_offline_mined_triplets_enter_the_loss(tmp_path):
    torch.manual_seed(1)
    shop = torch.nn.functional.normalize(torch.randn(6, 8), dim=1)
    street = torch.nn.functional.normalize(torch.randn(6, 8), dim=1)
    recipe = MetricRecipe(mining="none", symmetric=False, street_per_identity=1, offline_every=5, margin=0.5)
    tr = _Trainer(_tiny_data(), recipe, tmp_path)
    batch = tr.sampler.batch(0, identities=np.arange(6))
    pairs = np.array([[batch.shop[0], batch.shop[3]], [batch.shop[4], batch.shop[1]]])
    by_hand = []
    for a, n in ((0, 3), (4, 1)):
        d_ap = float(((shop[a] - street[a]) ** 2).sum())
        d_an = float(((shop[a] - street[n]) ** 2).sum())
        by_hand.append(max(0.0, d_ap - d_an + 0.5))
    nonzero = [v for v in by_hand if v > 0]
    assert float(tr.loss(shop, street, batch, pairs)) == pytest.approx(sum(nonzero) / len(nonzero), rel=1e-5)
    assert float(tr.loss(shop, street, batch, None)) == 0.0  # no online triplets with mining="none"


def test_cross_domain_sampler_gives_shop_anchors_and_street_positives_and_negatives():
    labels = np.repeat(np.arange(50), 2)  # 50 products with 2 shop images each
    sampler = CrossDomainSampler(labels, identities_per_batch=10, street_per_identity=3, seed=1)
    seen = set()
    for step in range(sampler.steps_per_epoch()):
        b = sampler.batch(step)
        assert len(b.shop) == 10 and len(b.street) == 30
        assert len(set(b.shop_labels.tolist())) == 10  # one anchor per identity
        np.testing.assert_array_equal(labels[b.shop], b.shop_labels)
        np.testing.assert_array_equal(labels[b.street], b.street_labels)
        for a in b.shop_labels:
            positives = (b.street_labels == a).sum()
            negatives = (b.street_labels != a).sum()
            assert positives == 3 and negatives == 27
        seen.update(b.shop_labels.tolist())
    assert seen == set(range(50))  # one epoch visits every identity
    # a pure function of (seed, step): resumable
    np.testing.assert_array_equal(
        sampler.batch(7).shop, CrossDomainSampler(labels, 10, 3, seed=1).batch(7).shop
    )
    assert not np.array_equal(sampler.batch(0).shop, CrossDomainSampler(labels, 10, 3, seed=2).batch(0).shop)


def test_offline_miner_triplets_are_harder_than_random():
    from lookalike.embedders import load_embedder

    x, _ = load_split("train")
    items = x[:400]
    # "street" views: the product shifted by a pixel, with sensor noise (the miner, not the
    # augmentation, is under test here)
    rng = np.random.default_rng(0)
    noisy = np.clip(np.roll(items, 1, axis=2) + rng.normal(0, 25, items.shape), 0, 255).astype(np.uint8)
    street = [Image.fromarray(a) for a in noisy]
    emb = load_embedder("pixels")
    shop_e = emb.embed_images([Image.fromarray(im) for im in items])
    street_e = emb.embed_images(street)
    rng = np.random.default_rng(0)
    mined = OfflineHardMiner(kind="hard", top_k=5).mine(shop_e, street_e, rng)
    assert (mined[:, 0] != mined[:, 1]).all()
    rand = np.stack([np.arange(400), (np.arange(400) + rng.integers(1, 400, 400)) % 400], axis=1)
    gap_mined = OfflineHardMiner.triplet_gaps(shop_e, street_e, mined).mean()
    gap_random = OfflineHardMiner.triplet_gaps(shop_e, street_e, rand).mean()
    assert gap_mined > gap_random + 0.1, (gap_mined, gap_random)
    semi = OfflineHardMiner(kind="semihard", margin=0.2).mine(shop_e, street_e, rng)
    assert OfflineHardMiner.triplet_gaps(shop_e, street_e, semi).mean() > gap_random


def test_street_view_augment_makes_varied_photos():
    x, _ = load_split("train")
    aug = StreetViewAugment()
    sizes, clean = set(), 0
    for i in range(12):
        img = aug(x[i], np.random.default_rng(i))
        assert img.mode == "RGB"
        w, h = img.size
        assert 16 <= min(w, h) and max(w, h) <= 320
        sizes.add(img.size)
        p = aug.last_params
        assert abs(p["rotation"]) <= 25 and 0 <= p["visible"] <= 1.0001
        clean += StreetViewAugment.is_clean(p)
        arr = np.asarray(img, np.float32)
        assert arr.std() > 3  # not blank
    assert len(sizes) > 6
    # same rng seed, same view: views are reproducible
    a = np.asarray(aug(x[0], np.random.default_rng(5)))
    b = np.asarray(aug(x[0], np.random.default_rng(5)))
    np.testing.assert_array_equal(a, b)


def test_street_view_of_a_product_on_white_equals_the_inverted_image():
    x, _ = load_split("train")
    aug = StreetViewAugment(size=(48, 64))
    on_black = np.asarray(aug(x[3], np.random.default_rng(1)))
    on_white = np.asarray(aug(255 - x[3], np.random.default_rng(1)))
    np.testing.assert_array_equal(on_black, on_white)
