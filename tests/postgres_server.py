"""A throw-away PostgreSQL server for tests, one per session, shared by every module that imports
the `postgres` fixture.

PostgreSQL binaries (initdb, pg_ctl) are looked up on PATH and in /usr/lib/postgresql/*/bin. Without
them the tests that need a server are skipped, unless FACEBRIDGE_REQUIRE_POSTGRES=1 (CI), which makes
it a failure.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

from .conftest import free_port


def postgres_bindir() -> Path | None:
    found = shutil.which("initdb")
    if found and shutil.which("pg_ctl"):
        return Path(found).resolve().parent
    candidates = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda p: int(p.parts[-3]))
    return candidates[-1].parent if candidates else None


class PostgresCluster:
    """A throw-away PostgreSQL server: initdb -A trust in a temp dir, pg_ctl start on a free port.

    initdb refuses to run as root, so as root it runs as the `postgres` user (runuser).
    """

    def __init__(self) -> None:
        bindir = postgres_bindir()
        if bindir is None:
            raise RuntimeError("PostgreSQL binaries (initdb, pg_ctl) not found: apt-get install postgresql")
        try:
            import psycopg
        except ImportError as exc:
            raise RuntimeError("psycopg is not installed: pip install 'facebridge[postgres]'") from exc
        self.bindir = bindir
        self.root = Path(tempfile.mkdtemp(prefix="facebridge-pg-"))
        self.data = self.root / "data"
        self.port = free_port()
        self.run_as: list[str] = []
        if os.geteuid() == 0:
            try:
                owner = pwd.getpwnam("postgres")
            except KeyError as exc:
                raise RuntimeError("running as root and no `postgres` user to run initdb as") from exc
            os.chown(self.root, owner.pw_uid, owner.pw_gid)
            self.run_as = ["runuser", "-u", "postgres", "--"]
        self._run("initdb", "-D", str(self.data), "-A", "trust", "-U", "postgres", "-E", "UTF8", "--no-sync")
        options = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1"
        self._run("pg_ctl", "-D", str(self.data), "-o", options, "-l", str(self.root / "log"), "-w", "start")
        import psycopg

        with psycopg.connect(self.dsn("postgres"), autocommit=True) as conn:
            conn.execute("CREATE DATABASE pairs")

    def _run(self, tool: str, *args: str) -> None:
        command = [*self.run_as, str(self.bindir / tool), *args]
        done = subprocess.run(command, capture_output=True, text=True, timeout=120)
        if done.returncode != 0:
            log = (self.root / "log").read_text() if (self.root / "log").exists() else ""
            raise RuntimeError(f"{tool} failed ({done.returncode}): {done.stderr[-2000:]}{log[-2000:]}")

    def dsn(self, database: str = "pairs", options: str = "") -> str:
        query = f"?options={quote(options)}" if options else ""
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}{query}"

    def store_dsn(self, options: str = "") -> str:
        """A DSN to a fresh, empty schema (one per store: a database each would cost a long checkpoint)."""
        import psycopg

        name = f"store_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(self.dsn(), autocommit=True) as conn:
            conn.execute(f"CREATE SCHEMA {name}")
        return self.dsn(options=f"-c search_path={name} {options}".strip())

    def checkpoint(self) -> None:
        import psycopg

        with psycopg.connect(self.dsn(), autocommit=True) as conn:
            conn.execute("CHECKPOINT")

    def stop(self) -> None:
        try:
            # immediate: no shutdown checkpoint (the cluster is deleted next)
            self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")
        finally:
            shutil.rmtree(self.root, ignore_errors=True)


_CLUSTER: dict[str, Any] = {"cluster": None, "users": 0, "error": None}
_CLUSTER_LOCK = threading.Lock()


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresCluster]:
    """One cluster for the session, shared by every module that imports this fixture."""
    with _CLUSTER_LOCK:
        if _CLUSTER["cluster"] is None and _CLUSTER["error"] is None:
            try:
                _CLUSTER["cluster"] = PostgresCluster()
            except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
                _CLUSTER["error"] = str(exc)
        if _CLUSTER["cluster"] is None:
            reason = f"no PostgreSQL server could be started: {_CLUSTER['error']}"
            if os.environ.get("FACEBRIDGE_REQUIRE_POSTGRES") == "1":
                pytest.fail(f"FACEBRIDGE_REQUIRE_POSTGRES=1 but {reason}")
            pytest.skip(reason)
        _CLUSTER["users"] += 1
    try:
        yield _CLUSTER["cluster"]
    finally:
        with _CLUSTER_LOCK:
            _CLUSTER["users"] -= 1
            if _CLUSTER["users"] == 0:
                _CLUSTER["cluster"].stop()
                _CLUSTER["cluster"] = None
