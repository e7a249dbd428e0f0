"""pgvector recall@10 and latency against its HNSW build parameters, on random 128-d vectors
(the hardest case): raw SQL kNN queries on one table, single-threaded builds and queries.

    .venv/bin/python bench/bench_pgvector_params.py --n 50000 --queries 200

Used to choose PostgresStore's defaults (lookalike.store.postgres.HNSW_DEFAULTS).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_ann  # noqa: E402


def main() -> None:
    from pgvector.psycopg import register_vector

    from lookalike.store.pgserver import LocalPostgres

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=50_000)
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--params", default="16:64,32:128,32:200", help="m:ef_construction,...")
    ap.add_argument("--efs", default="100,400,1000")
    args = ap.parse_args()
    data, queries = bench_ann.random_dataset(args.n, args.queries, np.random.default_rng(0))
    truth = bench_ann.exact_topk(data, queries, 10)
    server = LocalPostgres(Path(tempfile.mkdtemp(prefix="bench-pg-params-")) / "pgdata", fast_unsafe=True)
    server.start()
    try:
        url = server.create_database("params")
        with psycopg.connect(url, autocommit=True) as c:
            register_vector(c)
            c.execute("CREATE TABLE v (id int, e vector(128))")
            with c.cursor().copy("COPY v (id, e) FROM STDIN WITH (FORMAT BINARY)") as cp:
                cp.set_types(["int4", "vector"])
                for i in range(len(data)):
                    cp.write_row((i, data[i]))
            c.execute("SET maintenance_work_mem = '1GB'; SET max_parallel_maintenance_workers = 0")
            for pair in args.params.split(","):
                m, efc = (int(x) for x in pair.split(":"))
                c.execute("DROP INDEX IF EXISTS vi")
                t0 = time.perf_counter()
                index = f"USING hnsw (e vector_cosine_ops) WITH (m = {m}, ef_construction = {efc})"
                c.execute(f"CREATE INDEX vi ON v {index}")
                row = [f"m={m} ef_construction={efc}: build {time.perf_counter() - t0:.1f} s"]
                for ef in (int(e) for e in args.efs.split(",")):
                    c.execute(f"SET hnsw.ef_search = {ef}")
                    found, t0 = [], time.perf_counter()
                    for q in queries:
                        rows = c.execute("SELECT id FROM v ORDER BY e <=> %s LIMIT 10", (q,)).fetchall()
                        found.append(np.array([r[0] for r in rows]))
                    ms = (time.perf_counter() - t0) / len(queries) * 1000
                    row.append(f"ef_search {ef}: recall@10 {bench_ann.recall(found, truth):.3f}, {ms:.2f} ms")
                print(" | ".join(row), flush=True)
    finally:
        server.stop()


if __name__ == "__main__":
    main()
