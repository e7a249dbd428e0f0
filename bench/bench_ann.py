"""ANN at scale, side by side in one run: the embedded store (SQLite + an ANN index beside the file,
catalog-level) with each ANN backend (faiss, usearch, pqscan; --ann), the raw library on the same graph,
a standalone faiss IndexHNSWFlat, and pgvector HNSW (catalog-level, in PostgreSQL).

    .venv/bin/python bench/bench_ann.py --n 1000000 --queries 1000 --workdir /tmp/bench-ann \\
        --out /tmp/bench-ann.json

Datasets (n x 128, L2-normalised, cosine):
  random     i.i.d. normal vectors; queries are fresh normal vectors.
  clustered  built from real embeddings of the demo catalog: the 70,000 Fashion-MNIST items are
             embedded with the `pixels` model (1024-d), projected to 128-d with PCA, and each of
             the n vectors is one of those items plus Gaussian noise (noise norm 0.3) and
             re-normalised, so every item is a tight cluster of ~n/70k "photos". Queries are new
             noisy copies of random items.
Every product has one image; its category is a tier used for filters: t50 (50%), t5 (5%),
t01 (0.1%) and rest. Measured: recall@10 against exact search (numpy), QPS and p50/p99 latency of
single queries (vector in, product ids and metadata out for the catalog-level systems), at several
ef values (pqscan has no graph: its "ef" is the number of scan candidates re-ranked exactly);
filtered search recall and result counts at 50% / 5% / 0.1%; churn (delete 30% of the
vectors from each embedded ANN index and re-add them, recall vs the fresh build); build times.
Results are written to --out after every step, so a long run leaves partial results.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

K = 10
#: threads for every index build (faiss, usearch, pgvector leader + workers); --build-threads.
#: Default half the cores, see HNSWIndex.threads; give all cores when the machine is otherwise idle
BUILD_THREADS = max(1, (os.cpu_count() or 1) // 2)
#: maintenance_work_mem for pgvector's build (1M x 128 at m=32 needs about 1.5 GB)
PG_BUILD_MEMORY = "4GB"
MODEL = "bench128"
TIERS = [("t50", 0.5), ("t5", 0.05), ("t01", 0.001)]
#: the embedded store's ANN backends, in report order
BACKENDS = ("faiss", "usearch", "pqscan")
RAW_LABEL = {"pqscan": "raw faiss IndexPQFastScan + IndexRefineFlat (same codes; ef = candidates)"}

RESULTS: dict = {}
STARTED = time.perf_counter()


def log(*args) -> None:
    print(f"[{datetime.now(UTC).strftime('%H:%M:%S')}]", *args, flush=True)


def save(out: Path) -> None:
    RESULTS["elapsed_s"] = round(time.perf_counter() - STARTED, 1)  # so far: a cut run says how far
    out.write_text(json.dumps(RESULTS, indent=2))


def normalise(x: np.ndarray) -> np.ndarray:
    x = np.ascontiguousarray(x, dtype=np.float32)
    x /= np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    return x


# --- data -------------------------------------------------------------------------------------
def random_dataset(n: int, q: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    return normalise(rng.standard_normal((n, 128), dtype=np.float32)), normalise(
        rng.standard_normal((q, 128), dtype=np.float32)
    )


def clustered_dataset(n: int, q: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    from PIL import Image
    from sklearn.decomposition import PCA

    from lookalike.datasets.fashion_mnist import load_split
    from lookalike.embedders import load_embedder

    emb = load_embedder("pixels")
    parts = []
    for split in ("train", "test"):
        images, _ = load_split(split)
        parts.append(emb.embed_images([Image.fromarray(a) for a in images], progress=False))
    real = np.concatenate(parts)
    base = normalise(PCA(128, random_state=0).fit_transform(real))
    sigma = 0.3 / np.sqrt(128)

    def noisy(idx: np.ndarray) -> np.ndarray:
        return normalise(base[idx] + sigma * rng.standard_normal((len(idx), 128), dtype=np.float32))

    data = np.empty((n, 128), dtype=np.float32)
    for s in range(0, n, 100_000):
        idx = np.arange(s, min(n, s + 100_000)) % len(base)
        data[s : s + len(idx)] = noisy(idx)
    return data, noisy(rng.integers(0, len(base), q))


def exact_topk(data: np.ndarray, queries: np.ndarray, k: int, rows: np.ndarray | None = None) -> np.ndarray:
    """Row numbers of the exact top-k (cosine) for each query, within ``rows`` when given."""
    sub = data if rows is None else data[rows]
    k = min(k, len(sub))
    out = np.empty((len(queries), k), dtype=np.int64)
    for s in range(0, len(queries), 100):
        scores = queries[s : s + 100] @ sub.T
        top = np.argpartition(-scores, k - 1, axis=1)[:, :k]
        order = np.argsort(-np.take_along_axis(scores, top, 1), axis=1)
        top = np.take_along_axis(top, order, 1)
        out[s : s + 100] = top if rows is None else rows[top]
    return out


def recall(found: list[np.ndarray], truth: np.ndarray) -> float:
    return float(
        np.mean(
            [len(set(f.tolist()[:K]) & set(t.tolist())) / len(t) for f, t in zip(found, truth, strict=True)]
        )
    )


def timed_queries(fn, queries: np.ndarray) -> tuple[list[np.ndarray], dict]:
    """Run fn(q) -> row numbers for every query; returns results and QPS / p50 / p99 (ms)."""
    for q in queries[:20]:
        fn(q)  # warm up
    lat, found = [], []
    t0 = time.perf_counter()
    for q in queries:
        s = time.perf_counter()
        found.append(fn(q))
        lat.append(time.perf_counter() - s)
    total = time.perf_counter() - t0
    lat_ms = np.array(lat) * 1000
    return found, {
        "qps": round(len(queries) / total, 1),
        "p50_ms": round(float(np.percentile(lat_ms, 50)), 3),
        "p99_ms": round(float(np.percentile(lat_ms, 99)), 3),
    }


def pick_ef(by_ef: dict) -> int:
    """The smallest ef whose recall@10 reaches 0.95 (else the largest measured)."""
    good = [int(ef) for ef, r in by_ef.items() if r["recall@10"] >= 0.95]
    return min(good) if good else max(int(ef) for ef in by_ef)


def tiers_for(n: int, rng: np.random.Generator) -> np.ndarray:
    u = rng.random(n)
    out = np.full(n, "rest", dtype=object)
    lo = 0.0
    for name, frac in TIERS:
        out[(u >= lo) & (u < lo + frac)] = name
        lo += frac
    return out


# --- systems ------------------------------------------------------------------------------------
def bench_faiss(data, queries, truth, efs, res: dict, out: Path) -> None:
    import faiss

    faiss.omp_set_num_threads(BUILD_THREADS)
    index = faiss.IndexHNSWFlat(data.shape[1], 32, faiss.METRIC_INNER_PRODUCT)  # same M as HNSWIndex
    index.hnsw.efConstruction = 128
    t0 = time.perf_counter()
    index.add(data)
    res["build_s"] = round(time.perf_counter() - t0, 1)
    log(f"faiss build {res['build_s']}s")
    faiss.omp_set_num_threads(1)
    res["ef"] = {}
    for ef in efs:
        index.hnsw.efSearch = ef

        def fn(q, index=index):
            return index.search(q[None, :], K)[1][0]

        found, stats = timed_queries(fn, queries)
        res["ef"][ef] = {"recall@10": round(recall(found, truth), 4), **stats}
        log("faiss", ef, res["ef"][ef])
        save(out)


def load_sqlite(path: Path, data: np.ndarray, tiers: np.ndarray) -> float:
    from lookalike.store import NewImage, ProductWrite
    from lookalike.store.sqlite import SQLiteStore

    for suffix in ("", "-wal", "-shm"):
        Path(str(path) + suffix).unlink(missing_ok=True)
    store = SQLiteStore(path)
    t0 = time.perf_counter()
    for s in range(0, len(data), 5000):
        images, products = [], []
        for i in range(s, min(len(data), s + 5000)):
            sha = hashlib.sha256(f"img{i}".encode()).hexdigest()
            images.append(NewImage(sha, f"bench:{i}", 28, 28, None, None, data[i]))
            products.append(ProductWrite(f"p{i}", title=f"item {i}", category=tiers[i], image_shas=[sha]))
        store.write_batch(MODEL, images, products)
    store.set_meta("model", MODEL)
    store.close()
    return time.perf_counter() - t0


def open_catalog(db: Path, backend: str):
    """The embedded catalog searching its ``backend`` HNSW index (M=32, ef_construction=128, the
    store's own), built with the bench's threads; returns (catalog, PersistentHNSW)."""
    from lookalike.catalog import Catalog
    from lookalike.index.hnsw import PersistentHNSW, ann_folder

    cat = Catalog.open(db)
    cat.ann_min_vectors = 0  # HNSW even when --n is small
    cat.ann_backend = backend
    ann = cat._ann[MODEL] = PersistentHNSW(
        cat.store, MODEL, ann_folder(cat.store), backend=backend, threads=BUILD_THREADS
    )
    return cat, ann


def raw_search(index, ef: int):
    """fn(q) -> dataset rows, searching the library's own index object of an embedded index
    (no catalog, no wrapper); image ids are row + 1."""
    raw = index._index
    if index.backend == "pqscan":  # faiss's own re-ranking over the same codes: IndexRefineFlat
        import faiss

        live = index._labels >= 0
        assert live.all(), "the raw pqscan peer needs an index without tombstones"
        refine = getattr(index, "_bench_refine", None)
        if refine is None:  # copies the float vectors into faiss's flat refine index (once)
            refine = index._bench_refine = faiss.IndexRefineFlat(raw, faiss.swig_ptr(index._vectors()))
        params = faiss.IndexRefineSearchParameters(k_factor=max(1.0, ef / K))
        labels = index._labels
        return lambda q: labels[refine.search(q[None, :], K, params=params)[1][0]] - 1
    if index.backend == "usearch":
        raw.expansion_search = ef
        return lambda q: raw.search(q, K).keys.astype(np.int64) - 1
    raw.hnsw.efSearch = ef
    labels = index._labels  # faiss internal id -> image id
    return lambda q: labels[raw.search(q[None, :], K)[1][0]] - 1


def bench_embedded(db: Path, backend: str, queries, truth, ftruth, efs, res: dict, out: Path) -> None:
    t0 = time.perf_counter()
    cat, ann = open_catalog(db, backend)
    cat.search_vector(queries[0], k=K)  # builds the HNSW index beside the file
    res["index_build_s"] = round(time.perf_counter() - t0, 1)
    res["build_threads"] = BUILD_THREADS
    log(f"embedded {backend}: first search (build + save) {res['index_build_s']}s, {ann.last_action}")
    cat.close()
    t0 = time.perf_counter()
    cat, ann = open_catalog(db, backend)
    cat.search_vector(queries[0], k=K)
    res["reopen_first_search_s"] = round(time.perf_counter() - t0, 2)
    res["reopen_action"] = ann.last_action
    index = ann.index

    res["ef"], res["raw_ef"] = {}, {}
    for ef in efs:
        index.expansion_search = ef
        found, stats = timed_queries(lambda q: rows_of(cat.search_vector(q, k=K)), queries)
        res["ef"][ef] = {"recall@10": round(recall(found, truth), 4), **stats}
        log(f"embedded {backend}", ef, res["ef"][ef])
        found, stats = timed_queries(raw_search(index, ef), queries)
        res["raw_ef"][ef] = {"recall@10": round(recall(found, truth), 4), **stats}
        log(f"raw {backend}", ef, res["raw_ef"][ef])
        save(out)
    res["filter_ef"] = pick_ef(res["ef"])
    index.expansion_search = res["filter_ef"]
    res["filtered"] = measure_filtered(cat, queries, ftruth, f"embedded {backend}", out)
    cat.close()


def open_embedded_index(db: Path, backend: str):
    """The embedded store's HNSW index, loaded from the file beside the database."""
    cat, ann = open_catalog(db, backend)
    cat.search_vector(np.ones(128, dtype=np.float32), k=K)  # loads the file
    return cat, ann.index


def rows_of(hits) -> np.ndarray:
    """Dataset rows of catalog hits (product ids are "p<row>")."""
    return np.array([int(h.product_id[1:]) for h in hits], dtype=np.int64)


def measure_filtered(cat, queries, ftruth, label, out) -> dict:
    """Recall@10, fewest results and latency of category-filtered catalog searches, per tier."""
    results = {}
    for tier, _ in TIERS:
        fq = queries[: len(ftruth[tier])]
        found, stats = timed_queries(
            lambda q, t=tier: rows_of(cat.search_vector(q, k=K, filters={"category": t})), fq
        )
        results[tier] = {
            "recall@10": round(recall(found, ftruth[tier]), 4),
            "min_results": int(min(len(f) for f in found)),
            **stats,
        }
        log(f"{label} filtered", tier, results[tier])
        save(out)
    return results


def bench_churn(index, data, queries, truth, ef, res: dict) -> None:
    """Delete 30% of the vectors from the embedded store's fresh HNSW graph and re-add them
    (index.remove / add, the calls the store's incremental sync makes); compare recall of the
    index's unfiltered search (faiss: tombstones kept out of the results by a selector)."""
    index.expansion_search = ef

    def fn(q):
        return index.search(q, K)[0] - 1  # keys are image ids = row + 1

    found, _ = timed_queries(fn, queries)
    res["fresh_recall@10"] = round(recall(found, truth), 4)
    rows = np.random.default_rng(1).choice(len(data), int(0.3 * len(data)), replace=False)
    t0 = time.perf_counter()
    index.remove(rows + 1)
    index.add(rows + 1, data[rows])
    res["churn_s"] = round(time.perf_counter() - t0, 1)
    found, _ = timed_queries(fn, queries)
    res["churned_recall@10"] = round(recall(found, truth), 4)
    res["ef"] = ef
    res["delta"] = round(res["fresh_recall@10"] - res["churned_recall@10"], 4)
    log(f"churn {index.backend}", res)


def load_postgres(url: str, data: np.ndarray, tiers: np.ndarray) -> dict:
    """COPY the rows in (vectors in pgvector's binary format), then build the HNSW index the way
    the store does on a first search (PostgresStore.ensure_hnsw: its m / ef_construction)."""
    import psycopg
    from pgvector.psycopg import register_vector

    from lookalike.store.postgres import PostgresStore

    PostgresStore(url).close()  # migrations
    timings = {}
    t0 = time.perf_counter()
    with psycopg.connect(url, autocommit=True) as conn:
        register_vector(conn)  # before the cursor: it copies the connection's adapters
        cur = conn.cursor()
        products = "COPY products (id, product_id, title, category, created_at, updated_at) FROM STDIN"
        with cur.copy(products) as cp:
            for i in range(len(data)):
                cp.write_row((i + 1, f"p{i}", f"item {i}", tiers[i], "2026-01-01", "2026-01-01"))
        with cur.copy("COPY images (id, sha256, uri, width, height, created_at) FROM STDIN") as cp:
            for i in range(len(data)):
                sha = hashlib.sha256(f"img{i}".encode()).hexdigest()
                cp.write_row((i + 1, sha, f"bench:{i}", 28, 28, "2026-01-01"))
        with cur.copy("COPY product_images (product_id, image_id) FROM STDIN") as cp:
            for i in range(len(data)):
                cp.write_row((i + 1, i + 1))
        with cur.copy("COPY embeddings (image_id, model, dim, vector) FROM STDIN WITH (FORMAT BINARY)") as cp:
            cp.set_types(["int8", "text", "int4", "vector"])
            for i in range(len(data)):
                cp.write_row((i + 1, MODEL, 128, data[i]))
        n = len(data)
        cur.execute("SELECT setval('products_id_seq', %s), setval('images_id_seq', %s)", (n, n))
        cur.execute(
            "INSERT INTO meta(key, value) VALUES ('model', %s) ON CONFLICT (key) DO UPDATE SET value = "
            "EXCLUDED.value",
            (MODEL,),
        )
        cur.execute("UPDATE meta SET value = '1' WHERE key = 'generation'")
        timings["copy_s"] = round(time.perf_counter() - t0, 1)
        log(f"postgres copy {timings['copy_s']}s")
        cur.execute("VACUUM ANALYZE")
    # leader + BUILD_THREADS - 1 parallel workers
    store = PostgresStore(url)
    built = store.ensure_hnsw(MODEL, maintenance_work_mem=PG_BUILD_MEMORY, workers=BUILD_THREADS - 1)
    timings["hnsw_build_s"] = round(built or 0.0, 1)
    timings["hnsw"] = store.hnsw_options(MODEL)
    timings["build_threads"] = BUILD_THREADS
    store.close()
    log(f"postgres hnsw build {timings['hnsw_build_s']}s {timings['hnsw']}")
    return timings


def bench_pgvector(url: str, queries, truth, ftruth, efs, res: dict, out: Path) -> None:
    from lookalike.catalog import Catalog

    cat = Catalog.open(url)
    cat.search_vector(queries[0], k=K)
    index = cat._views[MODEL].index

    res["ef"] = {}
    for ef in efs:
        if ef > 1000:  # pgvector's hnsw.ef_search is at most 1000
            continue
        index.ef_search = ef
        found, stats = timed_queries(lambda q: rows_of(cat.search_vector(q, k=K)), queries)
        res["ef"][ef] = {"recall@10": round(recall(found, truth), 4), **stats}
        log("pgvector", ef, res["ef"][ef])
        save(out)
    res["filter_ef"] = pick_ef(res["ef"])
    index.ef_search = res["filter_ef"]
    res["filtered"] = measure_filtered(cat, queries, ftruth, "pgvector", out)
    cat.close()


def pg_label(sub: dict) -> str:
    h = sub.get("hnsw") or {"m": 16, "ef_construction": 64}  # results before the store's build
    return f"pgvector HNSW m={h['m']} efc={h['ef_construction']} (catalog-level)"


def embedded_of(d: dict, backend: str) -> dict:
    """Results of the embedded store with ``backend`` (files before --ann: "embedded" = usearch)."""
    return d.get(f"embedded_{backend}") or (d.get("embedded", {}) if backend == "usearch" else {})


def raw_of(sub: dict) -> dict:
    return sub.get("raw_ef") or sub.get("raw_usearch_ef", {})


def churn_of(d: dict, backend: str) -> dict:
    return d.get(f"churn_{backend}") or (d.get("churn", {}) if backend == "usearch" else {})


def at_recall(by_ef: dict, target: float) -> tuple[str, dict] | None:
    """(ef, measurement) of the smallest ef whose recall@10 reaches ``target``."""
    good = sorted((int(ef), m) for ef, m in by_ef.items() if m["recall@10"] >= target)
    return (str(good[0][0]), good[0][1]) if good else None


def equal_recall(d: dict) -> list[str]:
    """Each system at the smallest ef reaching recall@10 0.95 / 0.99, and embedded vs faiss QPS."""
    present = [b for b in BACKENDS if embedded_of(d, b)]
    systems = [
        *((f"embedded ({b})", embedded_of(d, b).get("ef", {})) for b in present),
        ("raw usearch", raw_of(embedded_of(d, "usearch"))),
        ("faiss", d.get("faiss_hnsw", {}).get("ef", {})),
        ("pgvector", d.get("pgvector", {}).get("ef", {})),
    ]
    ratios = [f"embedded ({b})" for b in present]
    lines = [
        "| recall@10 ≥ | "
        + " | ".join(n for n, _ in systems)
        + " | "
        + " | ".join(f"{r} / faiss QPS" for r in ratios)
        + " |"
    ]
    lines.append("|---" * (len(systems) + 1 + len(ratios)) + "|")
    targets = [0.95, 0.99]
    faiss_best = max((m["recall@10"] for m in d.get("faiss_hnsw", {}).get("ef", {}).values()), default=1.0)
    if faiss_best < 0.95:  # faiss never reaches the targets: compare at the best recall it reached
        targets.insert(0, faiss_best)
    for target in targets:
        cells, qps = [], {}
        for name, by_ef in systems:
            hit = at_recall(by_ef, target)
            if hit is None:
                cells.append("not reached" if by_ef else "—")
                continue
            ef, m = hit
            qps[name] = m["qps"]
            cells.append(f"ef {ef}: {m['qps']:.0f} QPS, p99 {m['p99_ms']:.2f} ms")
        cells += [f"{qps[r] / qps['faiss']:.0%}" if r in qps and "faiss" in qps else "—" for r in ratios]
        lines.append(f"| {target} | " + " | ".join(cells) + " |")
    return lines


def report(path: Path) -> str:
    """Markdown tables of a results file (for BENCHMARKS.md)."""
    r = json.loads(path.read_text())
    wall = r.get("wall_s") or f"{r.get('elapsed_s', '?')} (not finished)"
    threads = r.get("build_threads", "?")
    lines = [
        f"`{r['command']}` — {r['date']}, n = {r['n']:,}, {r['queries']} queries, build threads {threads}, "
        f"wall {wall} s",
        "",
    ]
    for name, d in r["datasets"].items():
        lines += [f"**{name}** (n = {r['n']:,} x 128)", ""]
        lines += ["| system | build | ef | recall@10 | QPS | p50 ms | p99 ms |", "|---" * 7 + "|"]
        rows = []
        for backend in BACKENDS:
            sub = embedded_of(d, backend)
            rows += [
                (f"embedded store, {backend} (catalog-level)", sub, sub.get("ef", {}), "index_build_s"),
                (RAW_LABEL.get(backend, f"raw {backend} (same graph)"), sub, raw_of(sub), None),
            ]
        rows += [
            (
                "faiss IndexHNSWFlat M=32 (standalone)",
                d.get("faiss_hnsw", {}),
                d.get("faiss_hnsw", {}).get("ef", {}),
                "build_s",
            ),
            (
                pg_label(d.get("pgvector", {})),
                d.get("pgvector", {}),
                d.get("pgvector", {}).get("ef", {}),
                "hnsw_build_s",
            ),
        ]
        for label, sub, by_ef, build in rows:
            for ef, m in by_ef.items():
                b = f"{sub.get(build)} s" if build and sub.get(build) is not None else ""
                lines.append(
                    f"| {label} | {b} | {ef} | {m['recall@10']:.3f} | {m['qps']:.0f} | {m['p50_ms']:.2f} | "
                    f"{m['p99_ms']:.2f} |"
                )
        head = "| filtered | selectivity | ef | recall@10 | min results | QPS | p50 ms | p99 ms |"
        lines += ["", head, "|---" * 8 + "|"]
        for label, sub in (
            *((f"embedded ({b})", embedded_of(d, b)) for b in BACKENDS),
            ("pgvector", d.get("pgvector", {})),
        ):
            for tier, m in sub.get("filtered", {}).items():
                size = d["tier_sizes"][tier]
                lines.append(
                    f"| {label} | {tier} ({size:,}) | {sub.get('filter_ef')} | {m['recall@10']:.3f} | "
                    f"{m['min_results']} | {m['qps']:.0f} | {m['p50_ms']:.2f} | {m['p99_ms']:.2f} |"
                )
        lines += ["", *equal_recall(d)]
        for backend in BACKENDS:
            c = churn_of(d, backend)
            if c:
                lines += [
                    "",
                    f"churn, {backend} (30% deleted + re-added, ef {c.get('ef')}): recall "
                    f"{c.get('fresh_recall@10')} -> {c.get('churned_recall@10')} (delta {c.get('delta')}), "
                    f"{c.get('churn_s')} s",
                ]
        lines.append("")
    return "\n".join(lines)


def plot(paths: list[Path], png: Path) -> None:
    """Recall@10 vs QPS per system and dataset (docs/img/scale-out-ann.png)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = []  # (results, dataset name) from every file; "results.json:random" picks one dataset
    for path in paths:
        file, _, only = str(path).partition(".json:")
        r = json.loads(Path(file + ".json" if only else file).read_text())
        panels += [(r, name) for name in r["datasets"] if not only or name == only]
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 3.6), squeeze=False)
    for ax, (r, name) in zip(axes[0], panels, strict=True):
        d = r["datasets"][name]
        for (label, by_ef, style), color in zip(
            [
                ("embedded store, faiss (catalog)", embedded_of(d, "faiss").get("ef", {}), "o-"),
                ("embedded store, usearch (catalog)", embedded_of(d, "usearch").get("ef", {}), "v-"),
                ("embedded store, pqscan (catalog)", embedded_of(d, "pqscan").get("ef", {}), "P-"),
                ("raw usearch", raw_of(embedded_of(d, "usearch")), "s--"),
                ("faiss IndexHNSWFlat", d.get("faiss_hnsw", {}).get("ef", {}), "^-"),
                (
                    pg_label(d.get("pgvector", {})).replace("HNSW ", "").replace("-level", ""),
                    d.get("pgvector", {}).get("ef", {}),
                    "d-",
                ),
            ],
            ["C0", "C1", "C5", "C2", "C3", "C4"],  # one colour per system in every panel
            strict=True,
        ):
            pts = sorted((m["recall@10"], m["qps"]) for m in by_ef.values())
            if pts:
                ax.plot([p[0] for p in pts], [p[1] for p in pts], style, label=label, ms=4, color=color)
        ax.axvline(0.95, color="grey", lw=0.8, ls=":")
        ax.set_yscale("log")
        ax.set_xlabel("recall@10")
        ax.set_ylabel("queries / s (one thread)")
        ax.set_title(f"{name}, n = {r['n']:,} x 128")
        ax.grid(alpha=0.3)
    for ax in axes[0]:
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(png, dpi=90)


def main() -> None:
    global BUILD_THREADS, PG_BUILD_MEMORY
    if len(sys.argv) >= 3 and sys.argv[1] == "--report":
        print("\n".join(report(Path(f)) for f in sys.argv[2:]))
        return
    if len(sys.argv) >= 4 and sys.argv[1] == "--plot":  # --plot RESULTS.json [MORE.json ...] OUT.png
        plot([Path(f) for f in sys.argv[2:-1]], Path(sys.argv[-1]))
        return
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--queries", type=int, default=1000)
    ap.add_argument("--filtered-queries", type=int, default=200)
    ap.add_argument("--datasets", default="random,clustered")
    ap.add_argument(
        "--systems",
        default="embedded,faiss,pgvector,churn",
        help="run in the order faiss, embedded, pgvector, churn",
    )
    ap.add_argument("--efs", default="64,128,256,512,1000")
    ap.add_argument(
        "--ann", default="faiss,usearch,pqscan", help="ANN backends of the embedded store, in order"
    )
    ap.add_argument("--workdir", default="/tmp/bench-ann")
    ap.add_argument("--out", default="/tmp/bench-ann.json")
    ap.add_argument("--build-threads", type=int, default=BUILD_THREADS, help="threads for index builds")
    ap.add_argument("--pg-build-memory", default=PG_BUILD_MEMORY, help="maintenance_work_mem for pgvector")
    ap.add_argument("--pg-shared-buffers", default="2GB", help="shared_buffers of a new benchmark server")
    args = ap.parse_args()
    BUILD_THREADS, PG_BUILD_MEMORY = args.build_threads, args.pg_build_memory
    os.environ.setdefault("LOOKALIKE_PROGRESS", "0")
    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    out = Path(args.out)
    efs = [int(e) for e in args.efs.split(",")]
    systems = args.systems.split(",")
    RESULTS.update(
        {
            "command": " ".join([Path(sys.executable).name, *sys.argv]),
            "date": datetime.now(UTC).isoformat(timespec="seconds"),
            "machine": f"{platform.machine()}, {os.cpu_count()} cpus, {platform.python_version()}",
            "build_threads": BUILD_THREADS,
            "n": args.n,
            "queries": args.queries,
            "datasets": {},
        }
    )
    server = None
    started = time.perf_counter()
    for name in args.datasets.split(","):
        rng = np.random.default_rng(0)
        t0 = time.perf_counter()
        data, queries = (random_dataset if name == "random" else clustered_dataset)(args.n, args.queries, rng)
        tiers = tiers_for(args.n, rng)
        res = RESULTS["datasets"][name] = {"make_s": round(time.perf_counter() - t0, 1)}
        t0 = time.perf_counter()
        truth = exact_topk(data, queries, K)
        fq = queries[: args.filtered_queries]
        ftruth = {t: exact_topk(data, fq, K, np.flatnonzero(tiers == t)) for t, _ in TIERS}
        res["tier_sizes"] = {t: int((tiers == t).sum()) for t, _ in TIERS}
        res["exact_s"] = round(time.perf_counter() - t0, 1)
        log(name, "data + exact ground truth ready", res)
        save(out)
        if "faiss" in systems:
            bench_faiss(data, queries, truth, efs, res.setdefault("faiss_hnsw", {}), out)
        db = work / f"{name}.db"
        anns = args.ann.split(",")
        if "embedded" in systems:
            res["sqlite_load_s"] = round(load_sqlite(db, data, tiers), 1)
            log(f"sqlite load {res['sqlite_load_s']}s")
            for backend in anns:
                sub = res.setdefault(f"embedded_{backend}", {})
                bench_embedded(db, backend, queries, truth, ftruth, efs, sub, out)
        if "pgvector" in systems:
            from lookalike.store.pgserver import LocalPostgres

            if server is None:
                server = LocalPostgres(work / "pgdata", fast_unsafe=True)
                if not server.initialised:  # room for the index in PostgreSQL's own cache
                    server.init()
                    with open(server.pgdata / "postgresql.auto.conf", "a") as f:
                        f.write(f"shared_buffers = '{args.pg_shared_buffers}'\n")
                server.start()
                RESULTS["pg_shared_buffers"] = args.pg_shared_buffers
            dbname = f"ann_{name}_{args.n}"
            import psycopg

            with psycopg.connect(server.url(), autocommit=True) as conn:
                conn.execute(f"DROP DATABASE IF EXISTS {dbname}")
            url = server.create_database(dbname)
            sub = res.setdefault("pgvector", {})
            sub.update(load_postgres(url, data, tiers))
            save(out)
            bench_pgvector(url, queries, truth, ftruth, efs, sub, out)
        if "churn" in systems and "embedded" in systems:  # last: it changes the embedded graph
            for backend in anns:
                cat, index = open_embedded_index(db, backend)
                ef = res[f"embedded_{backend}"]["filter_ef"]
                bench_churn(index, data, queries, truth, ef, res.setdefault(f"churn_{backend}", {}))
                cat.close()
                save(out)
        del data
    RESULTS["wall_s"] = round(time.perf_counter() - started, 1)
    save(out)
    if server is not None:
        server.stop()
    log("done", out)


if __name__ == "__main__":
    main()
