"""SQLite store: the embedded default, one file. WAL mode, one transaction per batch."""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterable, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from lookalike.errors import ImagesGone, StoreError
from lookalike.store.base import (
    ImageRecord,
    NewImage,
    ProductRecord,
    ProductWrite,
    Store,
    WriteResult,
    check_attribute_key,
)

# Numbered migrations, applied in order and recorded in schema_migrations.
MIGRATIONS: list[tuple[int, str, str]] = [
    (
        1,
        "create_tables",
        """
        CREATE TABLE products (
            id INTEGER PRIMARY KEY,
            product_id TEXT NOT NULL UNIQUE,
            title TEXT,
            category TEXT,
            attributes TEXT NOT NULL DEFAULT '{}',
            url TEXT,
            created_at TEXT NOT NULL,
            updated_at TEXT NOT NULL
        );
        CREATE INDEX products_category ON products(category);
        CREATE TABLE images (
            id INTEGER PRIMARY KEY,
            sha256 TEXT NOT NULL UNIQUE,
            uri TEXT,
            width INTEGER NOT NULL,
            height INTEGER NOT NULL,
            phash TEXT,
            thumbnail BLOB,
            created_at TEXT NOT NULL
        );
        CREATE INDEX images_phash ON images(phash);
        CREATE TABLE product_images (
            product_id INTEGER NOT NULL REFERENCES products(id) ON DELETE CASCADE,
            image_id INTEGER NOT NULL REFERENCES images(id) ON DELETE CASCADE,
            position INTEGER NOT NULL DEFAULT 0,
            PRIMARY KEY (product_id, image_id)
        );
        CREATE INDEX product_images_image ON product_images(image_id);
        CREATE TABLE embeddings (
            image_id INTEGER NOT NULL REFERENCES images(id) ON DELETE CASCADE,
            model TEXT NOT NULL,
            dim INTEGER NOT NULL,
            vector BLOB NOT NULL,
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


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _attr_key(key: str) -> str:
    """The JSON path of an attribute (a bound parameter, never spliced into the SQL)."""
    return '$."' + check_attribute_key(key) + '"'


class SQLiteStore(Store):
    def __init__(self, path: Path):
        self.path = Path(path)
        self.url = str(self.path)
        if self.path.is_dir():
            raise StoreError(f"database path {self.path} is a directory")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._conn = sqlite3.connect(
                self.path, check_same_thread=False, isolation_level=None, timeout=30.0
            )
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute("PRAGMA foreign_keys=ON")
            self._conn.execute("PRAGMA synchronous=NORMAL")
            self._conn.execute("PRAGMA busy_timeout=30000")
            # searches read a few random product rows per query: read them through a memory map
            # and keep more pages in SQLite's cache (64 MiB) than its 2 MiB default
            self._conn.execute("PRAGMA mmap_size=1073741824")
            self._conn.execute("PRAGMA cache_size=-65536")
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"cannot open database {self.path}: {exc}") from None
        self._lock = threading.RLock()
        self._migrate()

    # --- plumbing -----------------------------------------------------------------------
    @contextmanager
    def _tx(self):
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield self._conn
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            else:
                self._conn.execute("COMMIT")

    def _query(self, sql: str, params: Iterable = ()) -> list[tuple]:
        with self._lock:
            return self._conn.execute(sql, tuple(params)).fetchall()

    def _migrate(self) -> None:
        with self._tx() as c:
            c.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations "
                "(version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at TEXT NOT NULL)"
            )
            done = {r[0] for r in c.execute("SELECT version FROM schema_migrations")}
            newest = max((v for v, _, _ in MIGRATIONS), default=0)
            if done and max(done) > newest:
                raise StoreError(
                    f"{self.path} has schema version {max(done)}, newer than this lookalike ({newest})"
                )
            for version, name, sql in MIGRATIONS:
                if version in done:
                    continue
                for statement in sql.split(";"):
                    if statement.strip():
                        c.execute(statement)
                c.execute(
                    "INSERT INTO schema_migrations(version, name, applied_at) VALUES (?, ?, ?)",
                    (version, name, _now()),
                )

    def schema_version(self) -> int:
        return self._query("SELECT COALESCE(MAX(version), 0) FROM schema_migrations")[0][0]

    @staticmethod
    def _bump(c: sqlite3.Connection) -> None:
        c.execute("UPDATE meta SET value = CAST(value AS INTEGER) + 1 WHERE key = 'generation'")

    # --- writes ---------------------------------------------------------------------------
    def write_batch(self, model: str, images: list[NewImage], products: list[ProductWrite]) -> WriteResult:
        result = WriteResult()
        now = _now()
        with self._tx() as c:
            for im in images:
                cur = c.execute(
                    "INSERT INTO images(sha256, uri, width, height, phash, thumbnail, created_at) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT(sha256) DO NOTHING",
                    (im.sha256, im.uri, im.width, im.height, im.phash, im.thumbnail, now),
                )
                result.images_added += cur.rowcount
            shas = {im.sha256 for im in images} | {s for p in products for s in p.image_shas}
            ids = self._ids_for_shas(c, shas)
            if gone := set(shas) - ids.keys():  # deleted since the caller checked
                raise ImagesGone(gone)
            for im in images:
                if im.vector is None:
                    continue
                vec = np.ascontiguousarray(im.vector, dtype=np.float32)
                cur = c.execute(
                    "INSERT INTO embeddings(image_id, model, dim, vector) VALUES (?, ?, ?, ?) "
                    "ON CONFLICT(model, image_id) DO NOTHING",
                    (ids[im.sha256], model, vec.shape[0], vec.tobytes()),
                )
                result.embeddings_added += cur.rowcount
            for p in products:
                row = c.execute(
                    "SELECT id, title, category, attributes, url FROM products WHERE product_id = ?",
                    (p.product_id,),
                ).fetchone()
                if row is None:
                    cur = c.execute(
                        "INSERT INTO products(product_id, title, category, attributes, url, created_at, "
                        "updated_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                        (p.product_id, p.title, p.category, json.dumps(p.attributes), p.url, now, now),
                    )
                    pk = cur.lastrowid
                    result.products_created += 1
                else:
                    pk, title, category, attrs, url = row
                    merged = {**json.loads(attrs), **p.attributes}
                    new = (
                        p.title if p.title is not None else title,
                        p.category if p.category is not None else category,
                        json.dumps(merged),
                        p.url if p.url is not None else url,
                    )
                    if new != (title, category, attrs, url):
                        c.execute(
                            "UPDATE products SET title=?, category=?, attributes=?, url=?, updated_at=? "
                            "WHERE id=?",
                            (*new, now, pk),
                        )
                        result.products_updated += 1
                wanted = [ids[s] for s in dict.fromkeys(p.image_shas)]
                if p.replace_images:
                    keep = ",".join(str(i) for i in wanted) or "NULL"
                    cur = c.execute(
                        f"DELETE FROM product_images WHERE product_id = ? AND image_id NOT IN ({keep})", (pk,)
                    )
                    result.links_removed += cur.rowcount
                for pos, image_id in enumerate(wanted):
                    cur = c.execute(
                        "INSERT INTO product_images(product_id, image_id, position) VALUES (?, ?, ?) "
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
    def _ids_for_shas(c: sqlite3.Connection, shas: Iterable[str]) -> dict[str, int]:
        out: dict[str, int] = {}
        shas = list(shas)
        for i in range(0, len(shas), 500):
            chunk = shas[i : i + 500]
            q = ",".join("?" * len(chunk))
            out.update(c.execute(f"SELECT sha256, id FROM images WHERE sha256 IN ({q})", chunk).fetchall())
        return out

    @staticmethod
    def _drop_orphans(c: sqlite3.Connection) -> None:
        c.execute("DELETE FROM images WHERE id NOT IN (SELECT image_id FROM product_images)")

    def delete_product(self, product_id: str) -> bool:
        with self._tx() as c:
            cur = c.execute("DELETE FROM products WHERE product_id = ?", (product_id,))
            if cur.rowcount == 0:
                return False
            self._drop_orphans(c)
            self._bump(c)
        return True

    def set_attributes(self, updates: dict[str, dict]) -> int:
        n = 0
        now = _now()
        with self._tx() as c:
            for pid, attrs in updates.items():
                row = c.execute("SELECT id, attributes FROM products WHERE product_id = ?", (pid,)).fetchone()
                if row is None:
                    continue
                merged = {**json.loads(row[1]), **attrs}
                c.execute(
                    "UPDATE products SET attributes = ?, updated_at = ? WHERE id = ?",
                    (json.dumps(merged), now, row[0]),
                )
                n += 1
            if n:
                self._bump(c)
        return n

    # --- reads ----------------------------------------------------------------------------
    def images_with_sha(self, shas: Iterable[str], model: str) -> dict[str, tuple[int, bool]]:
        shas = list(dict.fromkeys(shas))
        out: dict[str, tuple[int, bool]] = {}
        for i in range(0, len(shas), 500):
            chunk = shas[i : i + 500]
            q = ",".join("?" * len(chunk))
            rows = self._query(
                f"SELECT i.sha256, i.id, e.image_id IS NOT NULL FROM images i "
                f"LEFT JOIN embeddings e ON e.image_id = i.id AND e.model = ? WHERE i.sha256 IN ({q})",
                [model, *chunk],
            )
            out.update({sha: (iid, bool(has)) for sha, iid, has in rows})
        return out

    def _products(self, where: str, params: list) -> list[tuple[int, ProductRecord]]:
        rows = self._query(
            "SELECT id, product_id, title, category, attributes, url, created_at, updated_at "
            f"FROM products WHERE {where}",
            params,
        )
        recs = {r[0]: ProductRecord(r[1], r[2], r[3], json.loads(r[4]), r[5], r[6], r[7], []) for r in rows}
        pks = list(recs)
        for i in range(0, len(pks), 500):
            chunk = pks[i : i + 500]
            q = ",".join("?" * len(chunk))
            for pk, iid in self._query(
                f"SELECT product_id, image_id FROM product_images WHERE product_id IN ({q}) "
                "ORDER BY product_id, position, image_id",
                chunk,
            ):
                recs[pk].image_ids.append(iid)
        return list(recs.items())

    def get_products(self, product_ids: Iterable[str]) -> dict[str, ProductRecord]:
        ids = list(dict.fromkeys(product_ids))
        out: dict[str, ProductRecord] = {}
        for i in range(0, len(ids), 500):
            chunk = ids[i : i + 500]
            q = ",".join("?" * len(chunk))
            out.update({r.product_id: r for _, r in self._products(f"product_id IN ({q})", chunk)})
        return out

    def product_pks(self, product_ids: Iterable[str]) -> dict[str, int]:
        ids = list(dict.fromkeys(product_ids))
        out: dict[str, int] = {}
        for i in range(0, len(ids), 500):
            chunk = ids[i : i + 500]
            q = ",".join("?" * len(chunk))
            out.update(self._query(f"SELECT product_id, id FROM products WHERE product_id IN ({q})", chunk))
        return out

    def products_by_pk(self, pks: Iterable[int]) -> dict[int, ProductRecord]:
        pks = [int(p) for p in dict.fromkeys(pks)]
        out: dict[int, ProductRecord] = {}
        for i in range(0, len(pks), 500):
            chunk = pks[i : i + 500]
            q = ",".join("?" * len(chunk))
            out.update(self._products(f"id IN ({q})", chunk))
        return out

    def list_products(
        self, after: int | None, limit: int, category: str | None = None
    ) -> list[tuple[int, ProductRecord]]:
        # rowid order: with a category this is a range of the (category, rowid) index
        where, params = ["id > ?"], [-1 if after is None else int(after)]
        if category is not None:
            where.append("category = ?")
            params.append(category)
        return self._products(" AND ".join(where) + " ORDER BY id LIMIT ?", [*params, int(limit)])

    def product_labels(self, pks: Iterable[int]) -> dict[int, tuple[str, str | None, str | None]]:
        pks = [int(p) for p in pks]
        out: dict[int, tuple[str, str | None, str | None]] = {}
        for i in range(0, len(pks), 500):
            chunk = pks[i : i + 500]
            q = ",".join("?" * len(chunk))
            for pk, *label in self._query(
                f"SELECT id, product_id, title, category FROM products WHERE id IN ({q})", chunk
            ):
                out[pk] = tuple(label)
        return out

    def get_image(self, image_id: int) -> ImageRecord | None:
        rows = self._query(
            "SELECT id, sha256, uri, width, height, phash FROM images WHERE id = ?", (int(image_id),)
        )
        return ImageRecord(*rows[0]) if rows else None

    def load_phashes(self) -> tuple[np.ndarray, list[str]]:
        rows = self._query("SELECT id, phash FROM images WHERE phash IS NOT NULL ORDER BY id")
        return np.array([r[0] for r in rows], dtype=np.int64), [r[1] for r in rows]

    def get_thumbnail(self, image_id: int) -> bytes | None:
        rows = self._query("SELECT thumbnail FROM images WHERE id = ?", (int(image_id),))
        return rows[0][0] if rows else None

    def get_thumbnails(self, image_ids: Sequence[int]) -> dict[int, bytes]:
        ids = [int(i) for i in image_ids]
        out: dict[int, bytes] = {}
        for s in range(0, len(ids), 900):  # well under SQLite's bound-parameter limit
            chunk = ids[s : s + 900]
            marks = ",".join("?" * len(chunk))
            for image_id, data in self._query(
                f"SELECT id, thumbnail FROM images WHERE id IN ({marks}) AND thumbnail IS NOT NULL", chunk
            ):
                out[int(image_id)] = data
        return out

    def matching_product_pks(self, filters: dict[str, str]) -> np.ndarray:
        clauses, params = [], []
        for key, value in filters.items():
            if key == "category":
                clauses.append("category = ?")
            else:  # booleans read as JSON writes them (true/false), as in PostgreSQL, not as 1/0
                path = _attr_key(key)
                clauses.append(
                    "CASE json_type(attributes, ?) WHEN 'true' THEN 'true' WHEN 'false' THEN 'false' "
                    "ELSE CAST(json_extract(attributes, ?) AS TEXT) END = ?"
                )
                params.extend([path, path])
            params.append(str(value))
        where = " AND ".join(clauses) or "1"
        rows = self._query(f"SELECT id FROM products WHERE {where}", params)
        return np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))

    def load_vectors(self, model: str) -> tuple[np.ndarray, np.ndarray]:
        rows = self._query(
            "SELECT image_id, dim, vector FROM embeddings WHERE model = ? ORDER BY image_id", (model,)
        )
        if not rows:
            return np.empty(0, dtype=np.int64), np.empty((0, 0), dtype=np.float32)
        dim = rows[0][1]
        ids = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
        mat = np.frombuffer(b"".join(r[2] for r in rows), dtype=np.float32).reshape(len(rows), dim)
        return ids, mat.copy()

    def embedded_image_ids(self, model: str) -> np.ndarray:
        """Image ids with a vector under ``model`` (lets an ANN index sync without reading vectors)."""
        rows = self._query("SELECT image_id FROM embeddings WHERE model = ? ORDER BY image_id", (model,))
        return np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))

    def load_links(self) -> tuple[np.ndarray, np.ndarray]:
        rows = self._query("SELECT product_id, image_id FROM product_images")
        arr = np.array(rows, dtype=np.int64).reshape(-1, 2)
        return arr[:, 0].copy(), arr[:, 1].copy()

    def vectors_for_images(self, image_ids: Iterable[int], model: str) -> dict[int, np.ndarray]:
        ids = [int(i) for i in image_ids]
        out: dict[int, np.ndarray] = {}
        for i in range(0, len(ids), 500):
            chunk = ids[i : i + 500]
            q = ",".join("?" * len(chunk))
            for iid, blob in self._query(
                f"SELECT image_id, vector FROM embeddings WHERE model = ? AND image_id IN ({q})",
                [model, *chunk],
            ):
                out[iid] = np.frombuffer(blob, dtype=np.float32).copy()
        return out

    def models(self) -> dict[str, int]:
        return dict(self._query("SELECT model, COUNT(*) FROM embeddings GROUP BY model ORDER BY model"))

    def counts(self) -> dict[str, int]:
        out = {}
        for table, name in [
            ("products", "products"),
            ("images", "images"),
            ("product_images", "links"),
            ("embeddings", "embeddings"),
        ]:
            out[name] = self._query(f"SELECT COUNT(*) FROM {table}")[0][0]
        return out

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
        rows = self._query("SELECT value FROM meta WHERE key = ?", (key,))
        return rows[0][0] if rows else None

    def set_meta(self, key: str, value: str) -> None:
        with self._tx() as c:
            c.execute(
                "INSERT INTO meta(key, value) VALUES (?, ?) "
                "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                (key, value),
            )

    def close(self) -> None:
        with self._lock:
            self._conn.close()
