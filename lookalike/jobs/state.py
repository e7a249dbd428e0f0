"""Index jobs as rows in the catalog database (tables ``jobs`` and ``job_batches``, migration 2).

The database, not the broker, is the record of a job: it survives Redis restarts and lost
messages, and a batch that is redone (after a worker died) replaces its own report instead of
adding to it, so the counts stay exact.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime

from lookalike.errors import NotFoundError

#: job states; a job is finished in the last three
QUEUED, RUNNING, SUCCEEDED, FAILED = "queued", "running", "succeeded", "failed"
COUNTERS = (
    "products_seen products_indexed products_failed products_created products_updated "
    "images_seen images_failed images_embedded images_reused"
).split()


class JobNotFound(NotFoundError):
    def __init__(self, job_id: str):
        self.job_id = job_id
        super().__init__(f"index job {job_id!r} not found")


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


class JobTable:
    """Job rows in one store (SQLite or PostgreSQL); each method is one transaction."""

    def __init__(self, store):
        self.store = store
        self._pg = type(store).__name__ == "PostgresStore"

    @contextmanager
    def _tx(self) -> Iterator:
        with self.store._tx() as conn:
            yield _Conn(conn, self._pg)

    def create(self, params: dict, products_total: int, batches_total: int) -> str:
        job_id = uuid.uuid4().hex[:16]
        now = _now()
        with self._tx() as c:
            c.execute(
                "INSERT INTO jobs(id, kind, state, params, batches_total, products_total, created_at) "
                "VALUES (?, 'index', ?, ?, ?, ?, ?)",
                (job_id, QUEUED, json.dumps(params), batches_total, products_total, now),
            )
            for n in range(batches_total):
                c.execute(
                    "INSERT INTO job_batches(job_id, batch_no, state) VALUES (?, ?, ?)", (job_id, n, QUEUED)
                )
            if batches_total == 0:
                c.execute("UPDATE jobs SET state = ?, finished_at = ? WHERE id = ?", (SUCCEEDED, now, job_id))
        return job_id

    def params(self, job_id: str) -> dict:
        with self._tx() as c:
            row = c.execute("SELECT params FROM jobs WHERE id = ?", (job_id,)).fetchone()
        if row is None:
            raise JobNotFound(job_id)
        return json.loads(row[0])

    def batch_state(self, job_id: str, batch_no: int) -> str | None:
        with self._tx() as c:
            row = c.execute(
                "SELECT state FROM job_batches WHERE job_id = ? AND batch_no = ?", (job_id, batch_no)
            ).fetchone()
        return row[0] if row else None

    def start_batch(self, job_id: str, batch_no: int, worker: str) -> bool:
        """Mark a batch running (one more attempt); False when it is already done."""
        now = _now()
        with self._tx() as c:
            row = c.execute(
                "SELECT state FROM job_batches WHERE job_id = ? AND batch_no = ?", (job_id, batch_no)
            ).fetchone()
            if row is None:
                raise JobNotFound(job_id)
            if row[0] == SUCCEEDED:
                return False
            c.execute(
                "UPDATE job_batches SET state = ?, attempts = attempts + 1, worker = ?, started_at = ?, "
                "error = NULL "
                "WHERE job_id = ? AND batch_no = ?",
                (RUNNING, worker, now, job_id, batch_no),
            )
            c.execute(
                "UPDATE jobs SET state = ?, started_at = COALESCE(started_at, ?) WHERE id = ? AND state = ?",
                (RUNNING, now, job_id, QUEUED),
            )
        return True

    def finish_batch(self, job_id: str, batch_no: int, report: dict) -> None:
        with self._tx() as c:
            c.execute(
                "UPDATE job_batches SET state = ?, report = ?, finished_at = ?, error = NULL "
                "WHERE job_id = ? AND batch_no = ?",
                (SUCCEEDED, json.dumps(report), _now(), job_id, batch_no),
            )
            self._maybe_finish(c, job_id)

    def fail_batch(self, job_id: str, batch_no: int, error: str, *, final: bool) -> None:
        """Record a batch error; ``final``: no retry is coming, the batch has failed."""
        with self._tx() as c:
            c.execute(
                "UPDATE job_batches SET state = ?, error = ?, finished_at = ? WHERE job_id = ? AND batch_no "
                "= ? "
                "AND state <> ?",
                (FAILED if final else QUEUED, error[:2000], _now(), job_id, batch_no, SUCCEEDED),
            )
            if final:
                self._maybe_finish(c, job_id)

    def fail_job(self, job_id: str, error: str) -> None:
        with self._tx() as c:
            c.execute(
                "UPDATE jobs SET state = ?, error = ?, finished_at = ? WHERE id = ?",
                (FAILED, error[:2000], _now(), job_id),
            )

    @staticmethod
    def _maybe_finish(c: _Conn, job_id: str) -> None:
        total, done, failed = c.execute(
            "SELECT COUNT(*), SUM(CASE WHEN state = ? THEN 1 ELSE 0 END), "
            "SUM(CASE WHEN state = ? THEN 1 ELSE 0 END) FROM job_batches WHERE job_id = ?",
            (SUCCEEDED, FAILED, job_id),
        ).fetchone()
        if total and (done or 0) + (failed or 0) == total:
            c.execute(
                "UPDATE jobs SET state = ?, finished_at = ? WHERE id = ? AND finished_at IS NULL",
                (FAILED if failed else SUCCEEDED, _now(), job_id),
            )

    def get(self, job_id: str) -> dict:
        """The job's state, progress counts, failures (the bad-item report) and batch errors."""
        with self._tx() as c:
            row = c.execute(
                "SELECT id, kind, state, params, batches_total, products_total, error, created_at, "
                "started_at, "
                "finished_at FROM jobs WHERE id = ?",
                (job_id,),
            ).fetchone()
            if row is None:
                raise JobNotFound(job_id)
            batches = c.execute(
                "SELECT batch_no, state, attempts, report, error FROM job_batches WHERE job_id = ? ORDER BY "
                "batch_no",
                (job_id,),
            ).fetchall()
        params = json.loads(row[3])
        counts = dict.fromkeys(COUNTERS, 0)
        failures: list[dict] = []
        errors: list[dict] = []
        by_state = {QUEUED: 0, RUNNING: 0, SUCCEEDED: 0, FAILED: 0}
        attempts = 0
        for batch_no, state, tries, report, error in batches:
            by_state[state] = by_state.get(state, 0) + 1
            attempts += tries
            if report:
                rep = json.loads(report)
                for key in COUNTERS:
                    counts[key] += rep.get(key, 0)
                failures.extend(rep.get("failures", []))
            if error:
                errors.append({"batch": batch_no, "state": state, "error": error})
        return {
            "id": row[0],
            "kind": row[1],
            "state": row[2],
            "source": params.get("source"),
            "model": params.get("model"),
            "limit": params.get("limit"),
            "products_total": row[5],
            "batches": {
                "total": row[4],
                "done": by_state[SUCCEEDED],
                "failed": by_state[FAILED],
                "running": by_state[RUNNING],
                "queued": by_state[QUEUED],
                "attempts": attempts,
            },
            **counts,
            "failures": failures,
            "errors": errors,
            "error": row[6],
            "created_at": row[7],
            "started_at": row[8],
            "finished_at": row[9],
        }

    def list(self, limit: int = 20) -> list[str]:
        with self._tx() as c:
            return [r[0] for r in c.execute("SELECT id FROM jobs ORDER BY created_at DESC LIMIT ?", (limit,))]


class _Conn:
    """``?`` placeholders for both drivers (psycopg wants ``%s``)."""

    def __init__(self, conn, pg: bool):
        self.conn, self.pg = conn, pg

    def execute(self, query: str, params: tuple = ()):
        if self.pg:
            query = query.replace("?", "%s")
        return self.conn.execute(query, params)
