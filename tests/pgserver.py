"""A PostgreSQL server of a test's own (initdb + pg_ctl of the installed PostgreSQL), on a free
loopback port in a temporary folder, that the test may restart; stopped and removed afterwards.

As root the server runs as the `postgres` OS user (PostgreSQL refuses to run as root).
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path


def _bindir() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(p.split("/")[-2]))
    return Path(found[-1]) if found and Path(found[-1], "pg_ctl").exists() else None


def available() -> bool:
    return _bindir() is not None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class PgServer:
    bindir: Path
    data: Path
    port: int
    user: str | None  # the OS user the server runs as (None: this process's)

    def _pg_ctl(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(self.bindir / "pg_ctl"), "-D", str(self.data), *args],
            user=self.user,
            capture_output=True,
            text=True,
            timeout=120,
            check=check,
        )

    @property
    def options(self) -> str:
        sock = self.data.parent / "sock"
        return (
            f"-p {self.port} -c listen_addresses=127.0.0.1 -k {sock} "
            "-c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        )

    def start(self) -> None:
        self._pg_ctl("-o", self.options, "-l", str(self.data.parent / "log"), "-w", "start")

    def restart(self) -> None:
        """Stop at once (every session is cut, as in a crash or a failover) and start again."""
        self._pg_ctl("-m", "immediate", "-w", "stop")
        self.start()

    def stop(self) -> None:
        self._pg_ctl("-m", "immediate", "-w", "stop", check=False)

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{database}"

    def create_database(self, name: str) -> str:
        from sqlalchemy import create_engine, text

        admin = create_engine(self.url(), isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        admin.dispose()
        return self.url(name)


@contextmanager
def pg_server() -> Iterator[PgServer]:
    bindir = _bindir()
    assert bindir is not None, "no PostgreSQL under /usr/lib/postgresql/*/bin"
    root = Path(tempfile.mkdtemp(prefix="leadflow-pg-"))
    user = "postgres" if os.geteuid() == 0 else None
    (root / "sock").mkdir()
    if user:
        pw = pwd.getpwnam(user)
        for p in (root, root / "sock"):
            os.chown(p, pw.pw_uid, pw.pw_gid)
    server = PgServer(bindir, root / "data", _free_port(), user)
    try:
        subprocess.run(
            [str(bindir / "initdb"), "-D", str(server.data), "-A", "trust", "-U", "postgres"]
            + ["--no-sync", "-E", "UTF8", "--locale", "C"],
            user=user,
            capture_output=True,
            text=True,
            timeout=180,
            check=True,
        )
        server.start()
        yield server
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)
