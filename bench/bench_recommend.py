"""Recommendations on Fashion-MNIST: do they follow what a simulated shopper liked?

    python bench/bench_recommend.py --products 20000 --sessions 300 --out runs/bench_recommend

A catalog of train-split products is indexed with each model (`default`, `pixels`). Each simulated
shopper likes (and dislikes) random catalog products of chosen categories; their top 10
recommendations are judged by category, the only taste Fashion-MNIST labels:

- one taste: 3 liked products of one category; share of the 10 in that category (P@10);
- two tastes: 2 + 2 liked products of two categories; share in either, and balance: the smaller of
  the two counts over 5 (1.0 = five of each, 0 = one category only);
- dislikes: 3 liked products of one category and 3 disliked of the category most often confused with
  it (Sneaker/Sandal, Shirt/T-shirt, Pullover/Coat …); share of the disliked category in the 10,
  without the dislikes and with them;
- diversity 0.3 against 0: P@10 (one taste) and the mean similarity between the 10.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np

from lookalike.catalog import Catalog
from lookalike.datasets.fashion_mnist import CLASSES
from lookalike.recommend import METHODS

#: each category and the one it is most often mistaken for (the class-level confusions)
CONFUSED = {
    "T-shirt/top": "Shirt",
    "Trouser": "Dress",
    "Pullover": "Coat",
    "Dress": "Coat",
    "Coat": "Pullover",
    "Sandal": "Sneaker",
    "Shirt": "T-shirt/top",
    "Sneaker": "Sandal",
    "Bag": "T-shirt/top",
    "Ankle boot": "Sneaker",
}


def sessions(by_cat: dict[str, list[str]], n: int, seed: int) -> dict[str, list]:
    rng = np.random.default_rng(seed)
    cats = list(CLASSES)
    one, two, dis = [], [], []
    for _ in range(n):
        a, b = rng.choice(cats, 2, replace=False)
        one.append((a, list(rng.choice(by_cat[a], 3, replace=False))))
        two.append(
            (a, b, [*rng.choice(by_cat[a], 2, replace=False), *rng.choice(by_cat[b], 2, replace=False)])
        )
        c = CONFUSED[a]
        dis.append(
            (
                a,
                c,
                list(rng.choice(by_cat[a], 3, replace=False)),
                list(rng.choice(by_cat[c], 3, replace=False)),
            )
        )
    return {"one": one, "two": two, "dislike": dis}


def judge(cat: Catalog, s: dict[str, list], method: str) -> dict[str, float]:
    k = 10
    p_one, p_two, bal, dis_without, dis_with, liked_with = [], [], [], [], [], []
    for a, liked in s["one"]:
        hits = cat.recommend(liked, k=k, method=method)
        p_one.append(sum(h.category == a for h in hits) / k)
    for a, b, liked in s["two"]:
        hits = cat.recommend(liked, k=k, method=method)
        na, nb = sum(h.category == a for h in hits), sum(h.category == b for h in hits)
        p_two.append((na + nb) / k)
        bal.append(min(na, nb) / (k / 2))
    for a, c, liked, disliked in s["dislike"]:
        dis_without.append(sum(h.category == c for h in cat.recommend(liked, k=k, method=method)) / k)
        hits = cat.recommend(liked, k=k, method=method, disliked=disliked)
        dis_with.append(sum(h.category == c for h in hits) / k)
        liked_with.append(sum(h.category == a for h in hits) / k)
    return {
        "one_taste_p10": float(np.mean(p_one)),
        "two_tastes_share": float(np.mean(p_two)),
        "two_tastes_balance": float(np.mean(bal)),
        "disliked_share_without": float(np.mean(dis_without)),
        "disliked_share_with": float(np.mean(dis_with)),
        "liked_share_with_dislikes": float(np.mean(liked_with)),
    }


def diversity(cat: Catalog, s: dict[str, list], method: str, model: str) -> dict[str, float]:
    out = {}
    for d in (0.0, 0.3):
        p, sim = [], []
        for a, liked in s["one"]:
            hits = cat.recommend(liked, k=10, method=method, diversity=d)
            p.append(sum(h.category == a for h in hits) / 10)
            v = np.stack([cat.product_vector(h.product_id, model) for h in hits])
            g = v @ v.T
            sim.append(float(g[~np.eye(len(v), dtype=bool)].mean()))
        out[f"diversity_{d}_p10"] = float(np.mean(p))
        out[f"diversity_{d}_mean_similarity"] = float(np.mean(sim))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--products", type=int, default=20000, help="train-split products in the catalog")
    ap.add_argument("--models", default="default,pixels")
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--sessions", type=int, default=300, help="simulated shoppers per scenario")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="runs/bench_recommend")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results: dict = {"machine": platform.processor() or platform.machine(), "args": vars(args)}
    for model in args.models.split(","):
        with Catalog.open(str(out / f"{model}.db")) as cat:
            if not cat.store.counts()["products"]:
                cat.index("fashion-mnist:train", model=model, limit=args.products, progress=False)
            by_cat: dict[str, list[str]] = {}
            for p in cat.store.get_products([f"fmnist-train-{i}" for i in range(args.products)]).values():
                by_cat.setdefault(p.category, []).append(p.product_id)
            s = sessions(by_cat, args.sessions, args.seed)
            for method in args.methods.split(","):
                t = time.perf_counter()
                row = judge(cat, s, method)
                row["ms_per_recommendation"] = 1000 * (time.perf_counter() - t) / (4 * args.sessions)
                row.update(diversity(cat, s, method, model))
                results[f"{model}/{method}"] = row
                print(model, method, json.dumps({k: round(v, 3) for k, v in row.items()}), flush=True)
    (out / "results.json").write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
