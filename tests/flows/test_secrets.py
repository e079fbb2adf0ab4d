"""Secrets never leave a run: not in logs, console, artifacts, Prefect's records or the warehouse."""

from __future__ import annotations

import logging
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from flows import stages
from flows.cli import EXIT_PARTIAL, main
from flows.settings import Settings, WarehouseSettings
from tests.faultserver import FaultServer, free_port, imap_source, serve, source_yaml, submissions
from warehouse import db
from warehouse.schema import metadata


class _Everything(logging.Handler):
    """Every record of every logger, formatted with its traceback, as a handler would write it."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []
        self.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


@pytest.fixture
def all_logs() -> Iterator[_Everything]:
    handler = _Everything()
    loggers = [logging.getLogger(), *(logging.getLogger(n) for n in ("prefect", "leadflow"))]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.addHandler(handler)
        lg.setLevel(logging.DEBUG)
    yield handler
    for lg, level in zip(loggers, levels, strict=True):
        lg.removeHandler(handler)
        lg.setLevel(level)


def _prefect_records() -> list[str]:
    """What the Prefect API keeps: flow and task runs (parameters, states), logs, artifacts."""
    from prefect.client.orchestration import get_client
    from prefect.logging.handlers import APILogWorker

    APILogWorker.drain_all(timeout=10)
    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs()
        out = [r.model_dump_json() for r in runs]
        out += [t.model_dump_json() for t in client.read_task_runs()]
        out += [a.model_dump_json() for a in client.read_artifacts()]
        out += [log.model_dump_json() for log in client.read_logs()]
    return out


def _warehouse_text(url: str) -> list[str]:
    engine = db.make_engine(url)
    out: list[str] = []
    with engine.connect() as conn:
        for table in metadata.sorted_tables:
            for row in conn.execute(select(table)):
                out.append(repr(tuple(row)))
    engine.dispose()
    return out


def test_no_secret_reaches_anything_a_run_emits(
    prefect_api: None,
    quick_retries: None,
    sample_config: Path,
    pg_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    all_logs: _Everything,
) -> None:
    token = f"tok-{secrets.token_hex(12)}"
    imap_password = f"imap-{secrets.token_hex(12)}"
    db_password = f"db-{secrets.token_hex(12)}"
    monkeypatch.setenv("FORMS_TOKEN", token)
    monkeypatch.setenv("MAILBOX_PASSWORD", imap_password)
    # Trust auth accepts any password: the URL carries one all the same, as in production.
    url = pg_url.replace("postgres@", f"postgres:{db_password}@")
    assert db_password in url
    monkeypatch.setenv("LEADFLOW_WAREHOUSE_URL", url)

    # The API serves two pages, then fails for good on the third; the mailbox is unreachable.
    # Masked where stored, the password still reaches the code that connects.
    seen_passwords: list[str | None] = []
    land = stages.extract_and_land

    def recording(engine: Any, *args: Any, **kwargs: Any) -> Any:
        seen_passwords.append(engine.url.password)
        return land(engine, *args, **kwargs)

    monkeypatch.setattr(stages, "extract_and_land", recording)
    fake = FaultServer(submissions(6), always={3: "500"})
    with serve(fake):
        extra = source_yaml("api_forms", fake.url, token_env="FORMS_TOKEN", attempts=2)
        extra += imap_source("mailbox", free_port(), "MAILBOX_PASSWORD")
        cfg = sample_config.read_text().replace("sources:\n", "sources:\n" + extra)
        sample_config.write_text(cfg)
        assert main(["run", "--config", str(sample_config)]) == EXIT_PARTIAL
        assert main(["status", "--config", str(sample_config)]) == 0
    # The secrets were really in play: the API got the token, the run wrote through the URL.
    assert any(h.get("Authorization") == f"Bearer {token}" for _, h in fake.seen)
    out, err = capsys.readouterr()
    assert "api_forms" in err and "mailbox" in err
    assert seen_passwords and set(seen_passwords) == {db_password}

    emitted = {
        "stdout": [out],
        "stderr": [err],
        "logs": all_logs.lines,
        "prefect": _prefect_records(),
        "warehouse": _warehouse_text(pg_url),
        "data docs": [
            p.read_text(errors="replace")
            for p in tmp_path.rglob("*")
            if p.is_file() and p.suffix in (".html", ".json", ".md")
        ],
    }
    assert all_logs.lines and emitted["prefect"] and emitted["warehouse"]
    # The settings reach Prefect's API no longer (the sources run as tasks of the run's own
    # flow, whose parameter is the config's path); serialized as Prefect stores a parameter,
    # the warehouse URL's password is masked.
    assert not any("postgresql+psycopg://postgres" in t for t in emitted["prefect"])
    as_stored = Settings(warehouse=WarehouseSettings(url=url)).model_dump_json()
    assert "postgres:***@127.0.0.1" in as_stored and db_password not in as_stored
    assert any("api_forms" in t and "HTTP 500" in t for t in emitted["warehouse"])
    for where, texts in emitted.items():
        for secret in (token, imap_password, db_password):
            leaks = [t for t in texts if secret in t]
            assert not leaks, f"{where} holds a secret: {leaks[0][:300]}"
