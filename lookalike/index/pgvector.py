"""Search inside PostgreSQL with pgvector's HNSW index: nothing is loaded into memory.

Filtered queries join the product filter into the index scan and let pgvector continue the scan
until enough rows pass (``hnsw.iterative_scan = relaxed_order``). A very selective filter (few
matching products) is answered exactly instead, and so is any filtered query whose index scan
came back short while enough matches exist: a filtered query returns k results whenever k exist.
"""

from __future__ import annotations

import numpy as np
from psycopg import sql

from lookalike.index.base import VectorIndex

#: filters matching at most this many products are searched exactly (at 200k vectors an exact
#: filtered query over 10,000 rows took 65 ms, the iterative index scan far less)
EXACT_FILTER_MAX = 2_000


class PgVectorIndex(VectorIndex):
    backend = "pgvector"

    def __init__(self, store, model: str, *, ef_search: int = 100):
        self.store = store
        self.model = model
        self.dim = store.model_dim(model) or 0
        self.ef_search = ef_search
        self._n = store.models().get(model, 0)

    def __len__(self) -> int:
        return self._n

    def _vec(self) -> sql.Composable:
        return sql.SQL("e.vector::vector({})").format(sql.Literal(self.dim))

    def _qvec(self) -> sql.Composable:
        return sql.SQL("%(q)b::vector({})").format(sql.Literal(self.dim))

    @staticmethod
    def _q(query: np.ndarray) -> np.ndarray:
        """The query as sent: float32, in pgvector's binary format (the store's connections)."""
        return np.ascontiguousarray(query, dtype=np.float32).reshape(-1)

    def _settings(self, c, m: int, max_scan: int | None = None, *, filtered: bool = True) -> None:
        """Per-query HNSW settings, in one round trip (they end with the transaction). The scan
        goes on past ef_search rows (iterative scan) only when a filter may drop rows or more rows
        than pgvector's largest ef_search are wanted: for the rest it only costs time (+25% here)."""
        ef = min(1000, max(self.ef_search, m))
        text = f"SET LOCAL hnsw.ef_search = {int(ef)}"
        if filtered or m > ef:
            text += "; SET LOCAL hnsw.iterative_scan = relaxed_order"
        if max_scan is not None:
            text += f"; SET LOCAL hnsw.max_scan_tuples = {int(max_scan)}"
        c.execute(text)

    # --- image-level VectorIndex ------------------------------------------------------------
    def search(
        self, query: np.ndarray, k: int, allowed: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        if self._n == 0 or k <= 0:
            return np.empty(0, dtype=np.int64), np.empty(0, dtype=np.float32)
        params = {"q": self._q(query), "k": int(k), "model": self.model}
        where = sql.SQL("e.model = %(model)s")
        exact = allowed is not None and len(allowed) <= EXACT_FILTER_MAX
        if allowed is not None:
            where = where + sql.SQL(" AND e.image_id = ANY(%(allowed)s)")
            params["allowed"] = np.asarray(allowed, dtype=np.int64).tolist()
        order = sql.SQL("({} <=> {})").format(self._vec(), self._qvec()) + (
            sql.SQL(" + 0") if exact else sql.SQL("")
        )
        q = sql.SQL(
            "WITH nn AS MATERIALIZED (SELECT e.image_id, {v} <=> {q} AS dist FROM embeddings e WHERE {w} "
            "ORDER BY {o} LIMIT %(k)s) SELECT image_id, dist FROM nn ORDER BY dist"
        ).format(v=self._vec(), q=self._qvec(), w=where, o=order)
        with self.store._tx() as c:
            self._settings(c, k, filtered=allowed is not None)
            rows = c.execute(q, params).fetchall()
        if allowed is not None and len(rows) < min(k, len(allowed)) and not exact:
            return self._exact_allowed(query, k, allowed)
        return _split(rows)

    def _exact_allowed(self, query, k, allowed):
        q = sql.SQL(
            "SELECT e.image_id, {v} <=> {q} AS dist FROM embeddings e WHERE e.model = %(model)s "
            "AND e.image_id = ANY(%(allowed)s) ORDER BY ({v} <=> {q}) + 0 LIMIT %(k)s"
        ).format(v=self._vec(), q=self._qvec())
        params = {
            "q": self._q(query),
            "k": int(k),
            "model": self.model,
            "allowed": np.asarray(allowed, dtype=np.int64).tolist(),
        }
        return _split(self.store._query(q, params))

    # --- product-level search (used by the Catalog) ---------------------------------------
    def search_products(
        self,
        query: np.ndarray,
        k: int,
        filters: dict[str, str] | None = None,
        exclude_pks: set[int] = frozenset(),
    ) -> list[tuple[int, int, float]]:
        """Top-k products as (product pk, best image id, cosine score), best first, in one SQL query."""
        if self._n == 0:
            return []
        want = k + len(exclude_pks)
        m = max(2 * want, 20)
        exact = False
        where_p, fparams = (sql.SQL("TRUE"), [])
        matches = None
        if filters:
            where_p, fparams = self.store.filter_sql(filters, alias="p")
            matches = self.store.count_matching(filters, EXACT_FILTER_MAX + 1)
            if matches == 0:
                return []
            exact = matches <= EXACT_FILTER_MAX
        while True:
            rows = self._product_rows(query, m, filters, where_p, fparams, exact)
            best: dict[int, tuple[int, float]] = {}
            images = set()
            for pk, iid, dist in rows:
                images.add(iid)
                if pk in exclude_pks or pk in best:
                    continue
                best[pk] = (iid, 1.0 - float(dist))
            if len(best) >= k or m >= self._n:
                break
            if len(images) < m:  # the scan ran dry: everything reachable was returned
                if filters and not exact and (matches is None or matches > len(best)):
                    exact = True  # the iterative scan gave up early; exact search finds the rest
                    continue
                break
            m = min(self._n, m * 4)
        out = sorted(best.items(), key=lambda kv: -kv[1][1])[:k]
        return [(pk, iid, score) for pk, (iid, score) in out]

    def _product_rows(self, query, m, filters, where_p, fparams, exact) -> list[tuple]:
        params = {"q": self._q(query), "m": int(m), "model": self.model}
        # named parameters everywhere: turn the filter's %s into %(f0)s, %(f1)s, ...
        fsql = where_p
        if fparams:
            names = [f"f{i}" for i in range(len(fparams))]
            params.update(dict(zip(names, fparams, strict=True)))
            fsql = _named(where_p, names)
        vec, qv = self._vec(), self._qvec()
        if exact:
            q = sql.SQL(
                "SELECT pi.product_id, e.image_id, {v} <=> {q} AS dist FROM products p "
                "JOIN product_images pi ON pi.product_id = p.id "
                "JOIN embeddings e ON e.image_id = pi.image_id AND e.model = %(model)s "
                "WHERE {f} ORDER BY ({v} <=> {q}) + 0 LIMIT %(m)s"
            ).format(v=vec, q=qv, f=fsql)
            return self.store._query(q, params)
        if filters:
            inner = sql.SQL(
                " AND EXISTS (SELECT 1 FROM product_images pi JOIN products p ON p.id = pi.product_id "
                "WHERE pi.image_id = e.image_id AND {f})"
            ).format(f=fsql)
            outer = sql.SQL(" JOIN products p ON p.id = pi.product_id WHERE {f}").format(f=fsql)
        else:
            inner = outer = sql.SQL("")
        q = sql.SQL(
            "WITH nn AS MATERIALIZED (SELECT e.image_id, {v} <=> {q} AS dist FROM embeddings e "
            "WHERE e.model = %(model)s{inner} ORDER BY {v} <=> {q} LIMIT %(m)s) "
            "SELECT pi.product_id, nn.image_id, nn.dist FROM nn JOIN product_images pi ON pi.image_id = "
            "nn.image_id"
            "{outer} ORDER BY nn.dist"
        ).format(v=vec, q=qv, inner=inner, outer=outer)
        max_scan = None
        if filters:
            max_scan = 50_000
        with self.store._tx() as c:
            self._settings(c, m, max_scan, filtered=bool(filters))
            return c.execute(q, params).fetchall()


def _named(clause: sql.Composable, names: list[str]) -> sql.Composable:
    """Replace each positional %s placeholder of a composed clause with a named one."""
    text = clause.as_string(None) if hasattr(clause, "as_string") else str(clause)
    parts = text.split("%s")
    assert len(parts) == len(names) + 1
    out = parts[0]
    for name, part in zip(names, parts[1:], strict=True):
        out += f"%({name})s" + part
    return sql.SQL(out)


def _split(rows: list[tuple]) -> tuple[np.ndarray, np.ndarray]:
    if not rows:
        return np.empty(0, dtype=np.int64), np.empty(0, dtype=np.float32)
    ids = np.array([r[0] for r in rows], dtype=np.int64)
    scores = 1.0 - np.array([r[1] for r in rows], dtype=np.float32)
    return ids, scores.astype(np.float32)
