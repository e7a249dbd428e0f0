"""Text search and tags on Fashion-MNIST: a text model trained on a catalog of train-split items,
judged on the 10k test images (tags) and on words (text search), for `default` against `pixels`.

    python bench/bench_text.py --products 10000 --out runs/bench_text

Tag accuracy: a test image's first tag is its category. Words -> products: for each query word, the
share of the first 20 products that are of the expected category ("P@20"). The words are the
category names and common shop words for them that the catalog never uses.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
from PIL import Image

from lookalike.catalog import Catalog
from lookalike.datasets.fashion_mnist import CLASSES, load_split
from lookalike.text import train_text_model

WORDS = {
    "T-shirt/top": ["T-shirt/top", "t-shirt", "tee"],
    "Trouser": ["Trouser", "trousers", "pants"],
    "Pullover": ["Pullover", "sweater", "jumper"],
    "Dress": ["Dress", "summer dress", "gown"],
    "Coat": ["Coat", "jacket", "parka"],
    "Sandal": ["Sandal", "sandals", "flip flops"],
    "Shirt": ["Shirt", "blouse", "button-down shirt"],
    "Sneaker": ["Sneaker", "sneakers", "running shoes"],
    "Bag": ["Bag", "handbag", "purse"],
    "Ankle boot": ["Ankle boot", "boots", "chelsea boots"],
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--products", type=int, default=10000, help="train-split items in the catalog")
    ap.add_argument("--models", default="default,pixels")
    ap.add_argument("--out", default="runs/bench_text")
    ap.add_argument("--rounds", type=int, default=20, help="latency rounds (3 queries each)")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    images, labels = load_split("test")
    test = [Image.fromarray(a) for a in images]
    results = {}
    for model in args.models.split(","):
        db = out / f"{model}.db"
        with Catalog.open(str(db)) as cat:
            t = time.perf_counter()
            if not cat.store.counts()["products"]:
                cat.index("fashion-mnist:train", model=model, limit=args.products, progress=False)
            t_index = time.perf_counter() - t
            t = time.perf_counter()
            tm = train_text_model(cat, progress=False)
            t_train = time.perf_counter() - t
            vecs = cat.embedder(model).embed_images(test, progress=False)
            first = [tm.tag_vector(v, k=1)[0].tag for v in vecs]
            tag_acc = float(np.mean([f == CLASSES[y] for f, y in zip(first, labels, strict=True)]))
            words = {}
            for category, queries in WORDS.items():
                for q in queries:
                    hits = cat.search_text(q, k=20, text_model=tm)
                    words[q] = round(sum(h.category == category for h in hits) / 20, 3)
            # one query's cost: words (encode + map + search) against a photo (embed + search),
            # interleaved rounds, best of each
            photo = test[0]
            text_s, photo_s = [], []
            for _ in range(args.rounds):
                t = time.perf_counter()
                for q in ("ankle boots", "a red handbag", "summer dress"):
                    cat.search_text(q, k=10, text_model=tm)
                text_s.append((time.perf_counter() - t) / 3)
                t = time.perf_counter()
                for _ in range(3):
                    cat.search(photo, k=10, model=model)
                photo_s.append((time.perf_counter() - t) / 3)
        names = [ws[0] for ws in WORDS.values()]
        others = [w for ws in WORDS.values() for w in ws[1:]]
        results[model] = {
            "index_s": round(t_index, 1),
            "train_text_s": round(t_train, 1),
            "held_out": tm.metrics,
            "tag_accuracy_10k_test": round(tag_acc, 4),
            "P@20_category_names": round(float(np.mean([words[w] for w in names])), 3),
            "P@20_other_words": round(float(np.mean([words[w] for w in others])), 3),
            "words": words,
            "query_ms_text": round(min(text_s) * 1000, 2),
            "query_ms_photo": round(min(photo_s) * 1000, 2),
        }
        print(model, json.dumps({k: v for k, v in results[model].items() if k != "words"}))
    (out / "results.json").write_text(json.dumps(results, indent=2))
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
