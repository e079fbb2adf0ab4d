"""A warehouse that cannot be used is one line and exit 2; one that goes away mid-run is one line
naming the stage, exit 1, and the next run completes as a clean run would. Through the real CLI."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from tests import pgserver
from tests.clirun import command, env, leadflow
from tests.conftest import pg_database
from tests.crashkit import snapshot, write_sample

CLOSED = "postgresql+psycopg://leadflow:s3cret-pw@127.0.0.1:{port}/warehouse"


def _closed_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])  # closed again once the socket is: nothing listens


COMMANDS = [
    ["run"],
    ["status"],
    ["db", "upgrade"],
    ["rejects", "list"],
    ["rejects", "replay"],
    ["forget", "--yes", "someone@example.com"],
]


def _one_line(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 2, (result.returncode, result.stderr[-2000:])
    assert "Traceback" not in result.stderr and "Traceback" not in result.stdout
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("leadflow: ")
    return lines[0]


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("bad-urls")
    (folder / "leadflow.yaml").write_text(
        "warehouse:\n  url: sqlite:///unused.db\nsources: []\n", encoding="utf-8"
    )
    return folder


@pytest.mark.parametrize("args", COMMANDS, ids=lambda a: " ".join(a[:2]))
def test_a_closed_port_is_one_line_naming_host_port_and_database_never_the_password(
    project: Path, args: list[str]
) -> None:
    port = _closed_port()
    url = CLOSED.format(port=port)
    result = leadflow(
        [*args[:1], "--config", str(project / "leadflow.yaml"), *args[1:]],
        env(project, LEADFLOW_WAREHOUSE_URL=url),
    )
    line = _one_line(result)
    assert f"127.0.0.1:{port}" in line and "database warehouse" in line and "postgresql" in line
    assert "user leadflow" in line and "check the host and port" in line
    assert "s3cret" not in result.stderr + result.stdout
    assert not (project / ".prefect").exists()  # refused before Prefect was started


@pytest.mark.parametrize(
    ("url", "expect"),
    [
        ("postgresql+psycopg://postgres@127.0.0.1:5432/leadflow_no_such_db", "does not exist"),
        ("postgres://postgres:pw@127.0.0.1:5432/x", "unknown database kind 'postgres'"),
        ("sqlite:///{folder}/no/such/folder/w.db", "folder exists and is writable"),
        ("sqlite:///{folder}", "unable to open database file"),  # a folder, not a file
    ],
    ids=["missing-database", "postgres-scheme", "missing-folder", "a-folder"],
)
@pytest.mark.parametrize("cmd", ["run", "status"])
def test_every_kind_of_unusable_url_is_one_line_and_exit_2(
    project: Path, url: str, expect: str, cmd: str
) -> None:
    url = url.format(folder=project)
    result = leadflow(
        [cmd, "--config", str(project / "leadflow.yaml")],
        env(project, LEADFLOW_WAREHOUSE_URL=url),
    )
    line = _one_line(result)
    assert expect in line
    assert ":pw@" not in line
    if url.startswith("sqlite"):
        assert "sqlite file" in line


def test_db_upgrade_names_one_head(project: Path, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'w.db'}"
    result = leadflow(
        ["db", "--config", str(project / "leadflow.yaml"), "upgrade"],
        env(project, LEADFLOW_WAREHOUSE_URL=url),
    )
    assert result.returncode == 0, result.stderr
    from warehouse import db

    (head,) = db.head_revisions()
    assert result.stdout.strip() == f"warehouse schema is at {head}"


def _count(url: str, table: str) -> int:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return int(conn.execute(text(f"select count(*) from {table}")).scalar_one())  # noqa: S608
    except Exception:
        return -1  # not created yet, or the server is restarting
    finally:
        engine.dispose()


@pytest.mark.slow
@pytest.mark.skipif(not pgserver.available(), reason="needs the PostgreSQL server binaries")
def test_a_warehouse_restarted_mid_run_fails_in_one_line_and_the_next_run_completes(
    tmp_path: Path, prefect_api_url: str
) -> None:
    config = str(write_sample(tmp_path, rows=600))
    environ = env(tmp_path, PREFECT_API_URL=prefect_api_url)
    with pgserver.pg_server() as pg:
        clean, broken = pg.create_database("clean"), pg.create_database("broken")
        first = leadflow(["run", "--config", config], {**environ, "LEADFLOW_WAREHOUSE_URL": clean})
        assert first.returncode == 0, first.stderr[-3000:]
        want = snapshot(clean)
        raw = len(want["raw_contacts"])

        proc = subprocess.Popen(
            [*command(), "run", "--config", config],
            env={**environ, "LEADFLOW_WAREHOUSE_URL": broken},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            text=True,
        )
        # Every record is landed, the publish lock is held and nothing is published yet: the
        # run is inside its publish transaction. Restart.
        deadline = time.monotonic() + 600
        while (
            _count(broken, "raw_contacts") < raw
            or _count(broken, "pipeline_locks where name = 'publish'") != 1
            or _count(broken, "contacts") != 0
        ):
            assert proc.poll() is None, "the run ended before the restart"
            assert time.monotonic() < deadline
            time.sleep(0.05)
        pg.restart()
        out, err = proc.communicate(timeout=600)
        assert _count(broken, "contacts") == 0, "the run published before the restart"
        assert proc.returncode == 1, (proc.returncode, err[-3000:])
        assert "Traceback" not in err + out, err
        lines = err.strip().splitlines()
        assert len(lines) == 1, err
        assert lines[0].startswith("leadflow: run run_") and " failed in process: " in lines[0]
        assert f"postgresql at 127.0.0.1:{pg.port}, database broken" in lines[0]
        # What the driver says depends on the moment the server went: mid-statement, between
        # statements, or while it was coming back.
        lost = ("server closed", "terminat", "Connection refused", "connection is lost")
        assert any(w in lines[0] for w in (*lost, "the database system is")), lines[0]

        again = leadflow(["run", "--config", config], {**environ, "LEADFLOW_WAREHOUSE_URL": broken})
        assert again.returncode == 0, again.stderr[-3000:]
        assert snapshot(broken) == want
        engine = create_engine(broken)
        with engine.connect() as conn:
            runs = conn.execute(text("select status, error from pipeline_runs order by started_at"))
            statuses = [(r.status, r.error) for r in runs]
        engine.dispose()
        assert statuses[-1] == ("succeeded", None)
        assert statuses[0][0] == "failed"


def test_unreachable_warehouse_in_a_dry_run_is_one_line(project: Path) -> None:
    with pg_database() as url:
        pass  # created and dropped: the database no longer exists
    result = leadflow(
        ["run", "--config", str(project / "leadflow.yaml"), "--dry-run"],
        env(project, LEADFLOW_WAREHOUSE_URL=url),
    )
    assert "does not exist" in _one_line(result)


def test_the_pools_report_of_a_lost_warehouse_stays_off_the_console() -> None:
    import logging

    import psycopg

    from flows.cli import _EngineErrorsOffConsole

    def record(name: str, exc: BaseException | None) -> logging.LogRecord:
        info = (type(exc), exc, None) if exc else None
        return logging.LogRecord(name, logging.ERROR, __file__, 1, "Error closing cursor", (), info)

    keep = _EngineErrorsOffConsole().filter
    lost = psycopg.OperationalError("server closed the connection unexpectedly")
    assert not keep(record("sqlalchemy.pool.impl.QueuePool", lost))
    assert keep(record("sqlalchemy.pool.impl.QueuePool", ValueError("a real bug")))
    assert keep(record("leadflow", lost))
    assert not keep(record("prefect.flow_runs", None))
