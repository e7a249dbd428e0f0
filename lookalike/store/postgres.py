"""PostgreSQL + pgvector store: the same data model as SQLite, for catalogs shared by many processes.

Vectors live in a ``vector`` column; each model gets a partial HNSW index (cosine ops) on
``vector::vector(dim)``, built over the stored vectors by the first search and maintained by
writes from then on, so search runs in the database (:class:`PgVectorIndex`). A batch is written
with a few set-based statements, vectors in pgvector's binary format. Connections come from a
psycopg 3 pool that checks each connection before use, so the pool reconnects after a server
restart; while the server is down every call raises a :class:`StoreError` that says so.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import numpy as np
import psycopg
from pgvector.psycopg.vector import register_vector_info
from psycopg import sql
from psycopg.adapt import Loader
from psycopg.pq import Format
from psycopg.types import TypeInfo
from psycopg_pool import ConnectionPool, PoolTimeout

from lookalike.errors import ImagesGone, InvalidRequest, StoreError
from lookalike.store.base import (
    ImageRecord,
    NewImage,
    ProductRecord,
    ProductWrite,
    Store,
    WriteResult,
    check_attribute_key,
)

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

log = logging.getLogger(__name__)

#: HNSW parameters of new indexes (m, ef_construction) and of queries (ef_search). pgvector's own
#: defaults (m=16, ef_construction=64) reached recall@10 0.77 on 200k random 128-d vectors at
#: ef_search=1000; m=32, ef_construction=128 is what the embedded usearch index uses (BENCHMARKS.md)
HNSW_DEFAULTS = {"m": 32, "ef_construction": 128, "ef_search": 100}
#: settings for building an index (that transaction only): memory for the graph (1M x 128-d at
#: m=32 needs about 1.5 GB; a graph that does not fit builds far slower) and parallel workers
BUILD_MAINTENANCE_WORK_MEM = "1GB"
BUILD_PARALLEL_WORKERS = 2


def split_options(url: str) -> tuple[str, dict[str, int]]:
    """(the URL for libpq, lookalike's ``hnsw_*`` query options) of a catalog URL."""
    parts = urlsplit(url)
    keep, options = [], {}
    for key, value in parse_qsl(parts.query, keep_blank_values=True):
        if key.startswith("hnsw_"):
            try:
                options[key.removeprefix("hnsw_")] = int(value)
            except ValueError:
                raise InvalidRequest(f"{redact(url)}: {key} must be an integer, got {value!r}") from None
        else:
            keep.append((key, value))
    libpq_url = urlunsplit(parts._replace(query=urlencode(keep)))
    try:  # libpq's own options (sslmode=...): a misspelt one is named here, not deep in a connect
        psycopg.conninfo.conninfo_to_dict(libpq_url)
    except psycopg.ProgrammingError as exc:
        raise InvalidRequest(f"{redact(url)}: {str(exc).strip()}") from None
    return libpq_url, options


def _check_hnsw(options: dict[str, int], url: str) -> None:
    unknown = set(options) - set(HNSW_DEFAULTS)
    if unknown:
        raise InvalidRequest(
            f"{redact(url)}: unknown option(s) {', '.join('hnsw_' + k for k in sorted(unknown))} "
            "(known: hnsw_m, hnsw_ef_construction, hnsw_ef_search)"
        )
    # pgvector's limits: m 2..100, ef_construction 4..1000 and >= 2 * m, ef_search 1..1000
    m, efc, efs = options["m"], options["ef_construction"], options["ef_search"]
    if not (2 <= m <= 100 and 4 <= efc <= 1000 and efc >= 2 * m and 1 <= efs <= 1000):
        raise InvalidRequest(
            f"{redact(url)}: invalid HNSW options m={m}, ef_construction={efc}, ef_search={efs} "
            "(pgvector needs 2 <= m <= 100, 4 <= ef_construction <= 1000, ef_construction >= 2*m, "
            "1 <= ef_search <= 1000)"
        )


def redact(url: str) -> str:
    """The URL without its password, for messages."""
    return re.sub(r"//([^:/@]+):[^@/]*@", r"//\1:***@", url)


def _iso(value) -> str | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat(timespec="seconds")
    return str(value)


class _VectorBytesLoader(Loader):
    """A vector in pgvector's binary format, as bytes (unpacked many at a time)."""

    format = Format.BINARY

    def load(self, data) -> bytes:
        return bytes(data)


def _unpack_vectors(blobs: list[bytes]) -> np.ndarray:
    """float32 [n, dim] from pgvector's binary format: uint16 dim, uint16 0, dim big-endian floats."""
    if len({len(b) for b in blobs}) != 1:
        raise StoreError("vectors of one model have different dimensions")
    # the 4-byte header takes the place of one float: drop that column
    return np.frombuffer(b"".join(blobs), dtype=">f4").reshape(len(blobs), -1)[:, 1:].astype(np.float32)


def index_name(model: str) -> str:
    return "embeddings_hnsw_" + hashlib.sha1(model.encode()).hexdigest()[:12]


class PostgresStore(Store):
    """A catalog in PostgreSQL. HNSW parameters come from keyword arguments or the URL
    (``postgresql://host/db?hnsw_m=32&hnsw_ef_construction=128&hnsw_ef_search=100``): m and
    ef_construction apply when a model's index is built, ef_search to every query
    (see :data:`HNSW_DEFAULTS`)."""

    def __init__(
        self,
        url: str,
        *,
        min_size: int = 1,
        max_size: int = 8,
        timeout: float = 5.0,
        hnsw_m: int | None = None,
        hnsw_ef_construction: int | None = None,
        hnsw_ef_search: int | None = None,
    ):
        self.url = url
        self._conninfo, options = split_options(url)
        explicit = {"m": hnsw_m, "ef_construction": hnsw_ef_construction, "ef_search": hnsw_ef_search}
        #: HNSW parameters: m and ef_construction for new indexes, ef_search for queries
        self.hnsw = {**HNSW_DEFAULTS, **options, **{k: int(v) for k, v in explicit.items() if v is not None}}
        _check_hnsw(self.hnsw, url)
        self._kwargs = {"connect_timeout": 5, "options": "-c timezone=UTC", "autocommit": True}
        self._dims: dict[str, int] = {}
        self._dims_lock = threading.Lock()
        #: models whose HNSW index is known to exist
        self._hnsw_ready: set[str] = set()
        try:
            with psycopg.connect(self._conninfo, **self._kwargs) as conn:
                self._migrate(conn)
                self._vector_info = TypeInfo.fetch(conn, "vector")
        except psycopg.OperationalError as exc:
            raise StoreError(f"PostgreSQL at {redact(url)} is unreachable: {_first_line(exc)}") from None
        self._pool = ConnectionPool(
            self._conninfo,
            min_size=min_size,
            max_size=max_size,
            timeout=timeout,
            kwargs=self._kwargs,
            configure=self._configure,
            check=ConnectionPool.check_connection,
            reconnect_timeout=0,
            name="lookalike",
            open=True,
        )

    def _configure(self, conn: psycopg.Connection) -> None:
        """numpy vectors are sent in pgvector's binary format (``%b``), no text formatting."""
        register_vector_info(conn, self._vector_info)

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

    def ensure_hnsw(
        self, model: str, *, maintenance_work_mem: str | None = None, workers: int | None = None
    ) -> float | None:
        """Build ``model``'s partial HNSW index over its stored vectors unless it exists; returns
        the build time in seconds (None: nothing built).

        Writes do not create the index: building a graph over rows already stored is several times
        faster than growing it row by row (BENCHMARKS.md), so the first search (or
        ``Catalog.warm()``) builds it, and from then on writes maintain it."""
        if model in self._hnsw_ready:
            return None
        dim = self.model_dim(model)
        if dim is None:
            return None
        name = index_name(model)
        built = None
        with self._tx() as c:
            if not c.execute("SELECT 1 FROM pg_indexes WHERE indexname = %s", (name,)).fetchone():
                c.execute("SELECT pg_advisory_xact_lock(7240316)")  # one builder at a time
                # memory and parallel workers for the build (this transaction only), never lowered
                c.execute(
                    "SELECT set_config('maintenance_work_mem', CASE WHEN pg_size_bytes(%(mem)s) > "
                    "pg_size_bytes(current_setting('maintenance_work_mem')) THEN %(mem)s "
                    "ELSE current_setting('maintenance_work_mem') END, true), "
                    "set_config('max_parallel_maintenance_workers', %(workers)s, true)",
                    {
                        "mem": maintenance_work_mem or BUILD_MAINTENANCE_WORK_MEM,
                        "workers": str(BUILD_PARALLEL_WORKERS if workers is None else workers),
                    },
                )
                started = time.perf_counter()
                c.execute(
                    sql.SQL(
                        "CREATE INDEX IF NOT EXISTS {} ON embeddings USING hnsw ((vector::vector({})) "
                        "vector_cosine_ops) WITH (m = {}, ef_construction = {}) WHERE model = {}"
                    ).format(
                        sql.Identifier(name),
                        sql.Literal(dim),
                        sql.Literal(self.hnsw["m"]),
                        sql.Literal(self.hnsw["ef_construction"]),
                        sql.Literal(model),
                    )
                )
                built = time.perf_counter() - started
                log.info("built the HNSW index of %r in %.1fs", model, built)
        self._hnsw_ready.add(model)
        return built

    def hnsw_options(self, model: str) -> dict[str, int]:
        """The build parameters of ``model``'s HNSW index as created ({} when it has none)."""
        rows = self._query("SELECT indexdef FROM pg_indexes WHERE indexname = %s", (index_name(model),))
        if not rows:
            return {}
        return {k: int(v) for k, v in re.findall(r"\b(m|ef_construction)='?(\d+)'?", rows[0][0])}

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
        """One transaction of a few set-based statements (arrays unnested in the server), not one
        round trip per row; vectors travel in pgvector's binary format."""
        result = WriteResult()
        now = datetime.now(UTC)
        with self._tx() as c:
            if images:
                cur = c.execute(
                    "INSERT INTO images(sha256, uri, width, height, phash, thumbnail, created_at) "
                    "SELECT u.sha256, u.uri, u.width, u.height, u.phash, u.thumbnail, %s "
                    "FROM unnest(%s::text[], %s::text[], %s::int[], %s::int[], %s::text[], %s::bytea[]) "
                    "WITH ORDINALITY AS u(sha256, uri, width, height, phash, thumbnail, n) ORDER BY u.n "
                    "ON CONFLICT (sha256) DO NOTHING",
                    (
                        now,
                        [im.sha256 for im in images],
                        [im.uri for im in images],
                        [im.width for im in images],
                        [im.height for im in images],
                        [im.phash for im in images],
                        [im.thumbnail for im in images],
                    ),
                )
                result.images_added += cur.rowcount
            shas = list({im.sha256 for im in images} | {s for p in products for s in p.image_shas})
            ids = dict(c.execute("SELECT sha256, id FROM images WHERE sha256 = ANY(%s)", (shas,)).fetchall())
            if gone := set(shas) - ids.keys():  # deleted since the caller checked
                raise ImagesGone(gone)
            vectors = [im for im in images if im.vector is not None]
            if vectors:
                dim = int(np.asarray(vectors[0].vector).shape[0])
                with self._dims_lock:
                    self._dims.setdefault(model, dim)
                cur = c.execute(
                    "INSERT INTO embeddings(image_id, model, dim, vector) "
                    "SELECT u.image_id, %s, %s, u.vector FROM unnest(%s::bigint[], %b::vector[]) "
                    "AS u(image_id, vector) ON CONFLICT (model, image_id) DO NOTHING",
                    (
                        model,
                        dim,
                        [ids[im.sha256] for im in vectors],
                        [np.asarray(im.vector, dtype=np.float32).reshape(-1) for im in vectors],
                    ),
                )
                result.embeddings_added += cur.rowcount
            # a product named twice in one batch is written twice, in order: each round holds at
            # most one write per product
            rounds: list[list[ProductWrite]] = []
            seen: dict[str, int] = {}
            for p in products:
                n = seen[p.product_id] = seen.get(p.product_id, -1) + 1
                if n == len(rounds):
                    rounds.append([])
                rounds[n].append(p)
            for part in rounds:
                self._write_products(c, part, ids, now, result)
            if any(p.replace_images for p in products):
                self._drop_orphans(c)
            if result.images_added or result.embeddings_added or result.links_added or products:
                self._bump(c)
        return result

    @staticmethod
    def _write_products(
        c: psycopg.Connection, products: list[ProductWrite], ids: dict[str, int], now, result: WriteResult
    ) -> None:
        """Create or merge products with distinct ids and link their images (see ProductWrite)."""
        select = "SELECT id, product_id, title, category, attributes, url FROM products WHERE "
        current = {
            r[1]: r
            for r in c.execute(
                select + "product_id = ANY(%s) ORDER BY product_id FOR UPDATE",
                ([p.product_id for p in products],),
            )
        }
        pk_of = {pid: r[0] for pid, r in current.items()}
        missing = [p for p in products if p.product_id not in current]
        if missing:
            rows = c.execute(
                "INSERT INTO products(product_id, title, category, attributes, url, created_at, updated_at) "
                "SELECT u.product_id, u.title, u.category, u.attributes::jsonb, u.url, %s, %s "
                "FROM unnest(%s::text[], %s::text[], %s::text[], %s::text[], %s::text[]) "
                "WITH ORDINALITY AS u(product_id, title, category, attributes, url, n) ORDER BY u.n "
                "ON CONFLICT (product_id) DO UPDATE SET product_id = EXCLUDED.product_id "
                "RETURNING id, product_id, (xmax = 0)",
                (
                    now,
                    now,
                    [p.product_id for p in missing],
                    [p.title for p in missing],
                    [p.category for p in missing],
                    [json.dumps(p.attributes) for p in missing],
                    [p.url for p in missing],
                ),
            ).fetchall()
            raced = []
            for pk, pid, created in rows:
                pk_of[pid] = pk
                if created:
                    result.products_created += 1
                else:
                    raced.append(pk)
            if raced:  # created concurrently by another writer: merge like an update
                for r in c.execute(select + "id = ANY(%s) FOR UPDATE", (raced,)):
                    current[r[1]] = r
        updates = []
        for p in products:
            row = current.get(p.product_id)
            if row is None:
                continue
            pk, _, title, category, attrs, url = row
            merged = {**attrs, **p.attributes}
            new = (
                p.title if p.title is not None else title,
                p.category if p.category is not None else category,
                merged,
                p.url if p.url is not None else url,
            )
            if new != (title, category, attrs, url):
                updates.append((pk, new[0], new[1], json.dumps(merged), new[3]))
        if updates:
            c.execute(
                "UPDATE products p SET title = u.title, category = u.category, "
                "attributes = u.attributes::jsonb, url = u.url, updated_at = %s "
                "FROM unnest(%s::bigint[], %s::text[], %s::text[], %s::text[], %s::text[]) "
                "AS u(id, title, category, attributes, url) WHERE p.id = u.id",
                (now, *(list(col) for col in zip(*updates, strict=True))),
            )
            result.products_updated += len(updates)
        link_pks, link_images, positions, replaced = [], [], [], []
        for p in products:
            pk = pk_of[p.product_id]
            if p.replace_images:
                replaced.append(pk)
            for pos, sha in enumerate(dict.fromkeys(p.image_shas)):
                link_pks.append(pk)
                link_images.append(ids[sha])
                positions.append(pos)
        if replaced:
            removed = c.execute(
                "DELETE FROM product_images pi WHERE pi.product_id = ANY(%s) AND NOT EXISTS "
                "(SELECT 1 FROM unnest(%s::bigint[], %s::bigint[]) AS k(product_id, image_id) "
                "WHERE k.product_id = pi.product_id AND k.image_id = pi.image_id)",
                (replaced, link_pks, link_images),
            )
            result.links_removed += removed.rowcount
        if link_pks:
            cur = c.execute(
                "INSERT INTO product_images(product_id, image_id, position) "
                "SELECT * FROM unnest(%s::bigint[], %s::bigint[], %s::int[]) ON CONFLICT DO NOTHING",
                (link_pks, link_images, positions),
            )
            result.links_added += cur.rowcount

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

    def list_products(
        self, after: int | None, limit: int, category: str | None = None
    ) -> list[tuple[int, ProductRecord]]:
        where, params = ["id > %s"], [-1 if after is None else int(after)]
        if category is not None:
            where.append("category = %s")
            params.append(category)
        return self._products(" AND ".join(where) + " ORDER BY id LIMIT %s", [*params, int(limit)])

    def product_labels(self, pks: Iterable[int]) -> dict[int, tuple[str, str | None, str | None]]:
        pks = [int(p) for p in pks]
        if not pks:
            return {}
        rows = self._query("SELECT id, product_id, title, category FROM products WHERE id = ANY(%s)", (pks,))
        return {pk: (pid, title, category) for pk, pid, title, category in rows}

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

    def get_thumbnails(self, image_ids: Sequence[int]) -> dict[int, bytes]:
        rows = self._query(
            "SELECT id, thumbnail FROM images WHERE id = ANY(%s) AND thumbnail IS NOT NULL",
            ([int(i) for i in image_ids],),
        )
        return {int(image_id): bytes(data) for image_id, data in rows}

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
            check_attribute_key(key)
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
        with self._conn() as conn, conn.cursor(binary=True) as cur:
            cur.adapters.register_loader(self._vector_info.oid, _VectorBytesLoader)
            cur.execute(
                "SELECT image_id, vector FROM embeddings WHERE model = %s ORDER BY image_id", (model,)
            )
            ids, vecs = [], []
            while rows := cur.fetchmany(10_000):
                ids.extend(r[0] for r in rows)
                vecs.append(_unpack_vectors([r[1] for r in rows]))
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
        with self._conn() as conn, conn.cursor(binary=True) as cur:
            cur.adapters.register_loader(self._vector_info.oid, _VectorBytesLoader)
            cur.execute(
                "SELECT image_id, vector FROM embeddings WHERE model = %s AND image_id = ANY(%s)",
                (model, ids),
            )
            rows = cur.fetchall()
        if not rows:
            return {}
        return dict(zip((r[0] for r in rows), _unpack_vectors([r[1] for r in rows]), strict=True))

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

        self.ensure_hnsw(model)
        return PgVectorIndex(self, model, ef_search=self.hnsw["ef_search"])


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
