"""PostgreSQL + pgvector store: the same data model as SQLite, for catalogs shared by many processes.

Vectors live in a ``vector`` column; each model gets a partial HNSW index (cosine ops) on
``vector::vector(dim)``, so search runs in the database (:class:`PgVectorIndex`). Connections
come from a psycopg 3 pool that checks each connection before use, so the pool reconnects after
a server restart; while the server is down every call raises a :class:`StoreError` that says so.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime

import numpy as np
import psycopg
from psycopg import sql
from psycopg_pool import ConnectionPool, PoolTimeout

from lookalike.errors import InvalidRequest, StoreError
from lookalike.store.base import ImageRecord, NewImage, ProductRecord, ProductWrite, Store, WriteResult

# Numbered migrations, applied in order and recorded in schema_migrations (same versions as SQLite).
MIGRATIONS: list[tuple[int, str, str]] = [
    (
        1,
        "create_tables",
        """
        CREATE EXTENSION IF NOT EXISTS vector;
        CREATE TABLE products (
            id BIGSERIAL PRIMARY KEY,
            product_id TEXT NOT NULL UNIQUE,
            title TEXT,
            category TEXT,
            attributes JSONB NOT NULL DEFAULT '{}',
            url TEXT,
            created_at TIMESTAMPTZ NOT NULL,
            updated_at TIMESTAMPTZ NOT NULL
        );
        CREATE INDEX products_category ON products(category);
        CREATE INDEX products_attributes ON products USING gin (attributes jsonb_path_ops);
        CREATE TABLE images (
            id BIGSERIAL PRIMARY KEY,
            sha256 TEXT NOT NULL UNIQUE,
            uri TEXT,
            width INTEGER NOT NULL,
            height INTEGER NOT NULL,
            phash TEXT,
            thumbnail BYTEA,
            created_at TIMESTAMPTZ NOT NULL
        );
        CREATE INDEX images_phash ON images(phash);
        CREATE TABLE product_images (
            product_id BIGINT NOT NULL REFERENCES products(id) ON DELETE CASCADE,
            image_id BIGINT NOT NULL REFERENCES images(id) ON DELETE CASCADE,
            position INTEGER NOT NULL DEFAULT 0,
            PRIMARY KEY (product_id, image_id)
        );
        CREATE INDEX product_images_image ON product_images(image_id);
        CREATE TABLE embeddings (
            image_id BIGINT NOT NULL REFERENCES images(id) ON DELETE CASCADE,
            model TEXT NOT NULL,
            dim INTEGER NOT NULL,
            vector vector NOT NULL,
            PRIMARY KEY (model, image_id)
        );
        CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
        INSERT INTO meta(key, value) VALUES ('generation', '0');
        """,
    ),
    (
        2,
        "create_jobs",
        """
        CREATE TABLE jobs (
            id TEXT PRIMARY KEY,
            kind TEXT NOT NULL,
            state TEXT NOT NULL,
            params TEXT NOT NULL,
            batches_total INTEGER NOT NULL DEFAULT 0,
            products_total INTEGER,
            error TEXT,
            created_at TEXT NOT NULL,
            started_at TEXT,
            finished_at TEXT
        );
        CREATE TABLE job_batches (
            job_id TEXT NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,
            batch_no INTEGER NOT NULL,
            state TEXT NOT NULL,
            attempts INTEGER NOT NULL DEFAULT 0,
            worker TEXT,
            report TEXT,
            error TEXT,
            started_at TEXT,
            finished_at TEXT,
            PRIMARY KEY (job_id, batch_no)
        );
        """,
    ),
]

#: a filter on fewer products than this is answered by exact search (no HNSW scan)
EXACT_FILTER_MAX = 20_000


def redact(url: str) -> str:
    """The URL without its password, for messages."""
    return re.sub(r"//([^:/@]+):[^@/]*@", r"//\1:***@", url)


def _iso(value) -> str | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat(timespec="seconds")
    return str(value)


def _vec_text(vec: np.ndarray) -> str:
    return "[" + ",".join(f"{x:.8g}" for x in np.asarray(vec, dtype=np.float32).tolist()) + "]"


def _parse_vec(text: str) -> np.ndarray:
    return np.array(json.loads(text), dtype=np.float32)


def index_name(model: str) -> str:
    return "embeddings_hnsw_" + hashlib.sha1(model.encode()).hexdigest()[:12]


class PostgresStore(Store):
    def __init__(self, url: str, *, min_size: int = 1, max_size: int = 8, timeout: float = 5.0):
        self.url = url
        self._conninfo = url
        self._kwargs = {"connect_timeout": 5, "options": "-c timezone=UTC", "autocommit": True}
        self._dims: dict[str, int] = {}
        self._dims_lock = threading.Lock()
        try:
            with psycopg.connect(url, **self._kwargs) as conn:
                self._migrate(conn)
        except psycopg.OperationalError as exc:
            raise StoreError(f"PostgreSQL at {redact(url)} is unreachable: {_first_line(exc)}") from None
        self._pool = ConnectionPool(
            url,
            min_size=min_size,
            max_size=max_size,
            timeout=timeout,
            kwargs=self._kwargs,
            check=ConnectionPool.check_connection,
            reconnect_timeout=0,
            name="lookalike",
            open=True,
        )

    # --- plumbing -----------------------------------------------------------------------
    @contextmanager
    def _conn(self) -> Iterator[psycopg.Connection]:
        try:
            with self._pool.connection() as conn:
                yield conn
        except PoolTimeout:
            raise StoreError(
                f"PostgreSQL at {redact(self.url)} is unreachable (no connection within "
                f"{self._pool.timeout:.0f}s)"
            ) from None
        except psycopg.OperationalError as exc:
            raise StoreError(f"PostgreSQL at {redact(self.url)} is unreachable: {_first_line(exc)}") from None

    @contextmanager
    def _tx(self) -> Iterator[psycopg.Connection]:
        """One transaction on a pooled connection (``conn.execute`` takes ``%s`` parameters)."""
        with self._conn() as conn, conn.transaction():
            yield conn

    def _query(self, query, params: Iterable | dict = ()) -> list[tuple]:
        with self._conn() as conn:
            return conn.execute(query, params if isinstance(params, dict) else tuple(params)).fetchall()

    def _migrate(self, conn: psycopg.Connection) -> None:
        with conn.transaction():
            # one migrator at a time when several processes open a fresh database
            conn.execute("SELECT pg_advisory_xact_lock(7240315)")
            conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations "
                "(version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at TIMESTAMPTZ NOT NULL DEFAULT "
                "now())"
            )
            done = {r[0] for r in conn.execute("SELECT version FROM schema_migrations")}
            newest = max(v for v, _, _ in MIGRATIONS)
            if done and max(done) > newest:
                raise StoreError(
                    f"{redact(self.url)} has schema version {max(done)}, newer than this lookalike ({newest})"
                )
            for version, name, script in MIGRATIONS:
                if version in done:
                    continue
                conn.execute(script)
                conn.execute("INSERT INTO schema_migrations(version, name) VALUES (%s, %s)", (version, name))

    def schema_version(self) -> int:
        return self._query("SELECT COALESCE(MAX(version), 0) FROM schema_migrations")[0][0]

    @staticmethod
    def _bump(c: psycopg.Connection) -> None:
        c.execute("UPDATE meta SET value = (value::bigint + 1)::text WHERE key = 'generation'")

    def _ensure_hnsw(self, c: psycopg.Connection, model: str, dim: int) -> None:
        """The partial HNSW index of one model (created with its first vectors)."""
        if self._dims.get(model) == dim:
            return
        name = index_name(model)
        exists = c.execute("SELECT 1 FROM pg_indexes WHERE indexname = %s", (name,)).fetchone()
        if not exists:
            c.execute("SELECT pg_advisory_xact_lock(7240316)")
            c.execute(
                sql.SQL(
                    "CREATE INDEX IF NOT EXISTS {} ON embeddings USING hnsw ((vector::vector({})) "
                    "vector_cosine_ops) "
                    "WITH (m = 16, ef_construction = 64) WHERE model = {}"
                ).format(sql.Identifier(name), sql.Literal(dim), sql.Literal(model))
            )
        with self._dims_lock:
            self._dims[model] = dim

    def model_dim(self, model: str) -> int | None:
        if model not in self._dims:
            row = self._query("SELECT dim FROM embeddings WHERE model = %s LIMIT 1", (model,))
            if not row:
                return None
            with self._dims_lock:
                self._dims[model] = row[0][0]
        return self._dims[model]

    # --- writes ---------------------------------------------------------------------------
    def write_batch(self, model: str, images: list[NewImage], products: list[ProductWrite]) -> WriteResult:
        result = WriteResult()
        now = datetime.now(UTC)
        with self._tx() as c:
            for im in images:
                cur = c.execute(
                    "INSERT INTO images(sha256, uri, width, height, phash, thumbnail, created_at) "
                    "VALUES (%s, %s, %s, %s, %s, %s, %s) ON CONFLICT (sha256) DO NOTHING",
                    (im.sha256, im.uri, im.width, im.height, im.phash, im.thumbnail, now),
                )
                result.images_added += cur.rowcount
            shas = list({im.sha256 for im in images} | {s for p in products for s in p.image_shas})
            ids = dict(c.execute("SELECT sha256, id FROM images WHERE sha256 = ANY(%s)", (shas,)).fetchall())
            vectors = [im for im in images if im.vector is not None]
            if vectors:
                dim = int(np.asarray(vectors[0].vector).shape[0])
                self._ensure_hnsw(c, model, dim)
                with c.cursor() as cur:
                    for im in vectors:
                        cur.execute(
                            "INSERT INTO embeddings(image_id, model, dim, vector) VALUES (%s, %s, %s, "
                            "%s::vector) "
                            "ON CONFLICT (model, image_id) DO NOTHING",
                            (ids[im.sha256], model, dim, _vec_text(im.vector)),
                        )
                        result.embeddings_added += cur.rowcount
            for p in products:
                row = c.execute(
                    "SELECT id, title, category, attributes, url FROM products WHERE product_id = %s FOR "
                    "UPDATE",
                    (p.product_id,),
                ).fetchone()
                if row is None:
                    pk, created = c.execute(
                        "INSERT INTO products(product_id, title, category, attributes, url, created_at, "
                        "updated_at) "
                        "VALUES (%s, %s, %s, %s, %s, %s, %s) ON CONFLICT (product_id) DO UPDATE "
                        "SET product_id = EXCLUDED.product_id RETURNING id, (xmax = 0)",
                        (p.product_id, p.title, p.category, json.dumps(p.attributes), p.url, now, now),
                    ).fetchone()
                    if created:
                        result.products_created += 1
                    else:  # created concurrently by another writer: merge like an update
                        row = c.execute(
                            "SELECT id, title, category, attributes, url FROM products WHERE id = %s FOR "
                            "UPDATE",
                            (pk,),
                        ).fetchone()
                if row is not None:
                    pk, title, category, attrs, url = row
                    merged = {**attrs, **p.attributes}
                    new = (
                        p.title if p.title is not None else title,
                        p.category if p.category is not None else category,
                        merged,
                        p.url if p.url is not None else url,
                    )
                    if new != (title, category, attrs, url):
                        c.execute(
                            "UPDATE products SET title=%s, category=%s, attributes=%s, url=%s, updated_at=%s "
                            "WHERE id=%s",
                            (new[0], new[1], json.dumps(merged), new[3], now, pk),
                        )
                        result.products_updated += 1
                wanted = [ids[s] for s in dict.fromkeys(p.image_shas)]
                if p.replace_images:
                    c.execute(
                        "DELETE FROM product_images WHERE product_id = %s AND NOT (image_id = ANY(%s))",
                        (pk, wanted),
                    )
                for pos, image_id in enumerate(wanted):
                    cur = c.execute(
                        "INSERT INTO product_images(product_id, image_id, position) VALUES (%s, %s, %s) "
                        "ON CONFLICT DO NOTHING",
                        (pk, image_id, pos),
                    )
                    result.links_added += cur.rowcount
            if any(p.replace_images for p in products):
                self._drop_orphans(c)
            if result.images_added or result.embeddings_added or result.links_added or products:
                self._bump(c)
        return result

    @staticmethod
    def _drop_orphans(c: psycopg.Connection) -> None:
        c.execute(
            "DELETE FROM images i WHERE NOT EXISTS (SELECT 1 FROM product_images pi WHERE pi.image_id = i.id)"
        )

    def delete_product(self, product_id: str) -> bool:
        with self._tx() as c:
            image_ids = [
                r[0]
                for r in c.execute(
                    "SELECT pi.image_id FROM product_images pi JOIN products p ON p.id = pi.product_id "
                    "WHERE p.product_id = %s",
                    (product_id,),
                )
            ]
            row = c.execute(
                "DELETE FROM products WHERE product_id = %s RETURNING id", (product_id,)
            ).fetchone()
            if row is None:
                return False
            # only this product's images can have become orphans
            c.execute(
                "DELETE FROM images i WHERE i.id = ANY(%s) "
                "AND NOT EXISTS (SELECT 1 FROM product_images pi WHERE pi.image_id = i.id)",
                (image_ids,),
            )
            self._bump(c)
        return True

    def set_attributes(self, updates: dict[str, dict]) -> int:
        n = 0
        now = datetime.now(UTC)
        with self._tx() as c:
            for pid, attrs in updates.items():
                cur = c.execute(
                    "UPDATE products SET attributes = attributes || %s::jsonb, updated_at = %s WHERE "
                    "product_id = %s",
                    (json.dumps(attrs), now, pid),
                )
                n += cur.rowcount
            if n:
                self._bump(c)
        return n

    # --- reads ----------------------------------------------------------------------------
    def images_with_sha(self, shas: Iterable[str], model: str) -> dict[str, tuple[int, bool]]:
        shas = list(dict.fromkeys(shas))
        if not shas:
            return {}
        rows = self._query(
            "SELECT i.sha256, i.id, e.image_id IS NOT NULL FROM images i "
            "LEFT JOIN embeddings e ON e.image_id = i.id AND e.model = %s WHERE i.sha256 = ANY(%s)",
            (model, shas),
        )
        return {sha: (iid, bool(has)) for sha, iid, has in rows}

    def _products(self, where: str, params: list) -> list[tuple[int, ProductRecord]]:
        with self._conn() as conn:
            rows = conn.execute(
                "SELECT id, product_id, title, category, attributes, url, created_at, updated_at "
                f"FROM products WHERE {where}",
                params,
            ).fetchall()
            recs = {
                r[0]: ProductRecord(r[1], r[2], r[3], r[4], r[5], _iso(r[6]), _iso(r[7]), []) for r in rows
            }
            if recs:
                for pk, iid in conn.execute(
                    "SELECT product_id, image_id FROM product_images WHERE product_id = ANY(%s) "
                    "ORDER BY product_id, position, image_id",
                    (list(recs),),
                ):
                    recs[pk].image_ids.append(iid)
        return list(recs.items())

    def get_products(self, product_ids: Iterable[str]) -> dict[str, ProductRecord]:
        ids = list(dict.fromkeys(product_ids))
        if not ids:
            return {}
        return {r.product_id: r for _, r in self._products("product_id = ANY(%s)", [ids])}

    def product_pks(self, product_ids: Iterable[str]) -> dict[str, int]:
        ids = list(dict.fromkeys(product_ids))
        if not ids:
            return {}
        return dict(self._query("SELECT product_id, id FROM products WHERE product_id = ANY(%s)", (ids,)))

    def products_by_pk(self, pks: Iterable[int]) -> dict[int, ProductRecord]:
        pks = [int(p) for p in dict.fromkeys(pks)]
        if not pks:
            return {}
        return dict(self._products("id = ANY(%s)", [pks]))

    def get_image(self, image_id: int) -> ImageRecord | None:
        rows = self._query(
            "SELECT id, sha256, uri, width, height, phash FROM images WHERE id = %s", (int(image_id),)
        )
        return ImageRecord(*rows[0]) if rows else None

    def load_phashes(self) -> tuple[np.ndarray, list[str]]:
        rows = self._query("SELECT id, phash FROM images WHERE phash IS NOT NULL ORDER BY id")
        return np.array([r[0] for r in rows], dtype=np.int64), [r[1] for r in rows]

    def get_thumbnail(self, image_id: int) -> bytes | None:
        rows = self._query("SELECT thumbnail FROM images WHERE id = %s", (int(image_id),))
        return bytes(rows[0][0]) if rows and rows[0][0] is not None else None

    def filter_sql(self, filters: dict[str, str], alias: str = "") -> tuple[sql.Composable, list]:
        """A WHERE clause over products for category / attribute equality filters."""
        prefix = f"{alias}." if alias else ""
        clauses: list[sql.Composable] = []
        params: list = []
        for key, value in filters.items():
            value = str(value)
            if key == "category":
                clauses.append(sql.SQL(prefix + "category = %s"))
                params.append(value)
                continue
            if not key or not all(c.isalnum() or c in "_-. " for c in key):
                raise InvalidRequest(f"invalid filter key {key!r}")
            # containment uses the GIN index; the alternatives match numbers and booleans as text
            options = [json.dumps({key: value})]
            for parsed in _json_scalars(value):
                options.append(json.dumps({key: parsed}))
            clauses.append(
                sql.SQL("(" + " OR ".join([prefix + "attributes @> %s::jsonb"] * len(options)) + ")")
            )
            params.extend(options)
        if not clauses:
            return sql.SQL("TRUE"), []
        return sql.SQL(" AND ").join(clauses), params

    def matching_product_pks(self, filters: dict[str, str]) -> np.ndarray:
        where, params = self.filter_sql(filters)
        rows = self._query(sql.SQL("SELECT id FROM products WHERE ") + where, params)
        return np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))

    def count_matching(self, filters: dict[str, str], limit: int) -> int:
        """How many products match, counting no further than ``limit``."""
        where, params = self.filter_sql(filters)
        q = sql.SQL("SELECT COUNT(*) FROM (SELECT 1 FROM products WHERE {} LIMIT %s) s").format(where)
        return self._query(q, [*params, limit])[0][0]

    def load_vectors(self, model: str) -> tuple[np.ndarray, np.ndarray]:
        with self._conn() as conn, conn.cursor() as cur:
            cur.execute(
                "SELECT image_id, vector::text FROM embeddings WHERE model = %s ORDER BY image_id", (model,)
            )
            ids, vecs = [], []
            while rows := cur.fetchmany(10_000):
                ids.extend(r[0] for r in rows)
                vecs.append(np.array([json.loads(r[1]) for r in rows], dtype=np.float32))
        if not ids:
            return np.empty(0, dtype=np.int64), np.empty((0, 0), dtype=np.float32)
        return np.asarray(ids, dtype=np.int64), np.concatenate(vecs)

    def load_links(self) -> tuple[np.ndarray, np.ndarray]:
        rows = self._query("SELECT product_id, image_id FROM product_images")
        arr = np.array(rows, dtype=np.int64).reshape(-1, 2)
        return arr[:, 0].copy(), arr[:, 1].copy()

    def vectors_for_images(self, image_ids: Iterable[int], model: str) -> dict[int, np.ndarray]:
        ids = [int(i) for i in image_ids]
        if not ids:
            return {}
        rows = self._query(
            "SELECT image_id, vector::text FROM embeddings WHERE model = %s AND image_id = ANY(%s)",
            (model, ids),
        )
        return {iid: _parse_vec(text) for iid, text in rows}

    def models(self) -> dict[str, int]:
        return dict(self._query("SELECT model, COUNT(*) FROM embeddings GROUP BY model ORDER BY model"))

    def counts(self) -> dict[str, int]:
        row = self._query(
            "SELECT (SELECT COUNT(*) FROM products), (SELECT COUNT(*) FROM images), "
            "(SELECT COUNT(*) FROM product_images), (SELECT COUNT(*) FROM embeddings)"
        )[0]
        return dict(zip(["products", "images", "links", "embeddings"], row, strict=True))

    def categories(self) -> dict[str, int]:
        return dict(
            self._query(
                "SELECT category, COUNT(*) FROM products WHERE category IS NOT NULL "
                "GROUP BY category ORDER BY category"
            )
        )

    def generation(self) -> int:
        return int(self._query("SELECT value FROM meta WHERE key = 'generation'")[0][0])

    def get_meta(self, key: str) -> str | None:
        rows = self._query("SELECT value FROM meta WHERE key = %s", (key,))
        return rows[0][0] if rows else None

    def set_meta(self, key: str, value: str) -> None:
        with self._tx() as c:
            c.execute(
                "INSERT INTO meta(key, value) VALUES (%s, %s) ON CONFLICT (key) DO UPDATE SET value = "
                "EXCLUDED.value",
                (key, value),
            )

    def close(self) -> None:
        self._pool.close()

    # --- search in the database -----------------------------------------------------------
    def make_index(self, model: str):
        """A VectorIndex that searches this model's vectors with pgvector (no vectors in memory)."""
        from lookalike.index.pgvector import PgVectorIndex

        return PgVectorIndex(self, model)


def _json_scalars(value: str) -> list:
    out: list = []
    try:
        number = json.loads(value)
    except ValueError:
        return out
    if isinstance(number, bool | int | float) and not isinstance(number, str):
        out.append(number)
    return out


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]
