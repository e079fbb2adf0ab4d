"""Shared fixtures: a Prefect test API once per session, and throwaway SQLite/PostgreSQL warehouses."""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples" / "sources"
PG_ADMIN_URL = os.environ.get(
    "LEADFLOW_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)

os.environ.setdefault("PREFECT_HOME", tempfile.mkdtemp(prefix="leadflow-prefect-"))
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
os.environ.pop("LEADFLOW_WAREHOUSE_URL", None)


@pytest.fixture(scope="session")
def prefect_api() -> Iterator[None]:
    """One ephemeral Prefect API for the whole session, heartbeats off (they cost ~1 s a flow)."""
    from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY, temporary_settings
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        with temporary_settings(updates={PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}):
            yield


@pytest.fixture(autouse=True)
def files_at_rest(monkeypatch: pytest.MonkeyPatch) -> None:
    """A source's files are read as they are, without waiting for them to settle.

    A real source's files were written long before a run reads them; a test writes its files a
    moment before, and each read would wait out the rest of a second (111 s of the suite's time,
    summed over its workers). The wait itself is tested where it is set back: a sheet rewritten
    while runs read it (`tests/flows/test_faults.py`)."""
    from connectors import spreadsheet, vcard

    monkeypatch.setattr(spreadsheet, "SETTLE_SECONDS", 0.0)
    monkeypatch.setattr(vcard, "SETTLE_SECONDS", 0.0)


@pytest.fixture(scope="session")
def prefect_api_url(prefect_api: None) -> str:
    """The session's Prefect API, for tests that run the `leadflow` command as a child process.

    A child pointed at a running API talks to it, as a deployment's runs talk to their server; one
    left to itself starts an ephemeral API of its own first: 8-17 s a command on this machine,
    the most of what those tests cost. Tests of a fresh install leave it out on purpose."""
    from prefect.settings import PREFECT_API_URL

    url = PREFECT_API_URL.value()
    assert url, "the test harness set no API URL"
    return str(url)


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'warehouse.db'}"


@contextmanager
def pg_database() -> Iterator[str]:
    """A fresh PostgreSQL database, dropped afterwards."""
    from sqlalchemy import create_engine, text

    name = f"leadflow_test_{uuid.uuid4().hex[:12]}"
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    try:
        yield url
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture
def pg_url() -> Iterator[str]:
    with pg_database() as url:
        yield url


@pytest.fixture(params=["sqlite", "postgresql"])
def warehouse_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """Each test that takes this runs on the embedded SQLite and on the real PostgreSQL."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'warehouse.db'}"
    else:
        with pg_database() as url:
            yield url


@pytest.fixture
def sample_config(tmp_path: Path) -> Path:
    """A copy of the bundled samples and a config pointing at them (the warehouse URL comes later)."""
    src = tmp_path / "sources"
    shutil.copytree(EXAMPLES, src)
    cfg = tmp_path / "leadflow.yaml"
    text = (
        (ROOT / "leadflow.yaml").read_text(encoding="utf-8").replace("examples/sources", "sources")
    )
    # Each run's Data Docs site goes under the test's own folder, not the working directory.
    text += f"quality:\n  docs_dir: {tmp_path / 'leadflow_docs'}\n"
    cfg.write_text(text, encoding="utf-8")
    return cfg


def write_config(path: Path, warehouse_url: str, body: str) -> Path:
    path.write_text(f"warehouse:\n  url: {warehouse_url}\n{body}", encoding="utf-8")
    return path


# The heaviest test files, heaviest first (seconds each, the mean of two runs of the whole suite,
# summed over their tests). `make test` hands whole files to its workers in collection order;
# started last, a file of a minute keeps one worker busy after the others are done. Only an
# order: a file missing here runs after these, as collected.
HEAVY_FIRST = (
    "tests/console/test_http.py",  # 134 s
    "tests/flows/test_errors.py",  # 104
    "tests/warehouse/test_scoped_checks.py",  # 104
    "tests/flows/test_crash.py",  # 99
    "tests/flows/test_operations.py",  # 96
    "tests/warehouse/test_marts_incremental.py",  # 73
    "tests/flows/test_pipeline.py",  # 67
    "tests/flows/test_decisions_next_run.py",  # 66
    "tests/flows/test_cli_promises.py",  # 62
    "tests/warehouse/test_pending_queue.py",  # 62
    "tests/flows/test_source_warnings.py",  # 59
    "tests/warehouse/test_publish_bulk.py",  # 53
    "tests/flows/test_deployments.py",  # 51
    "tests/connectors/test_vcard.py",  # 46
    "tests/flows/test_model_cli.py",  # 46
    "tests/flows/test_rebuild.py",  # 39
    "tests/flows/test_quality_gate.py",  # 37
    "tests/flows/test_repair_loop.py",  # 37
    "tests/warehouse/test_match_models.py",  # 34
    "tests/flows/test_concurrency.py",  # 33
    "tests/flows/test_merge_conversions.py",  # 33
    "tests/flows/test_sticky_rules.py",  # 30
    "tests/flows/test_ops_cli.py",  # 29
    "tests/warehouse/test_gate.py",  # 28
    "tests/transforms/test_layouts.py",  # 26
    "tests/warehouse/test_publish.py",  # 25
)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Heaviest files first, each file's tests together and in their own order."""
    rank = {name: i for i, name in enumerate(HEAVY_FIRST)}

    def weight(item: pytest.Item) -> int:
        path = Path(str(item.path)).resolve().relative_to(ROOT).as_posix()
        return rank.get(path, len(HEAVY_FIRST))

    items.sort(key=weight)  # stable: the rest keep their collected order
