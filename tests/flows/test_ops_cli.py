"""The operator's commands through the real Prefect flows: backfill, rebuild, status, forget, dask."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from sqlalchemy import text

from flows.cli import main
from tests.flows.test_operations import snapshot
from warehouse import db


def _use(cfg: Path, url: str, extra: str = "") -> None:
    cfg.write_text(cfg.read_text().replace("sqlite:///leadflow.db", url) + extra)


def test_backfill_rebuild_status_and_forget_from_the_command_line(
    prefect_api: None, sample_config: Path, sqlite_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    _use(sample_config, sqlite_url)
    cfg = str(sample_config)
    window = ["--start", "2026-01-01", "--end", "2027-01-01"]
    assert main(["backfill", "--config", cfg, *window]) == 0
    out = capsys.readouterr().out
    assert "reconciled" in out and " NO " not in out and "TOTAL" in out
    engine = db.make_engine(sqlite_url)
    first = snapshot(engine)
    assert first["source_cursors"] == [] and len(first["raw_contacts"]) == 23

    assert main(["backfill", "--config", cfg, "--start", "2026-10-01", "--end", "2026-10-20"]) == 0
    assert main(["rebuild", "--config", cfg]) == 0
    assert snapshot(engine) == first
    with engine.connect() as conn:
        runs = conn.execute(
            text("select flow, params, stats from pipeline_runs order by started_at")
        ).all()
    assert [r.flow for r in runs] == ["backfill", "backfill", "rebuild"]
    bf = runs[0]
    params = bf.params if isinstance(bf.params, dict) else __import__("json").loads(bf.params)
    stats = bf.stats if isinstance(bf.stats, dict) else __import__("json").loads(bf.stats)
    assert params["start"] == "2026-01-01" and params["end"] == "2027-01-01"
    assert set(stats["seconds"]) == {"extract", "process", "total"}
    assert stats["sources"]["fair_istanbul"]["reconciled"] == 1
    assert set(stats["process"]["timings"]) >= {"normalize", "resolve", "qualify", "publish"}
    capsys.readouterr()

    assert main(["status", "--config", cfg]) == 0
    out = capsys.readouterr().out
    assert "rebuild" in out and "backfill" in out
    assert "fair_istanbul" in out and "(start)" in out  # backfills moved no cursor
    rows = {line.split()[0]: line for line in out.splitlines() if line.strip()}
    # every sample is from October 2026 (the sheets by their config's received_at, whatever
    # their copy's mtime), older than freshness_hours
    assert "STALE" in rows["sales_inbox"] and "STALE" in rows["fair_istanbul"]

    assert main(["forget", "--config", cfg, "--yes", "ayse.yilmaz@gmail.com"]) == 0
    assert "erased: leads=1" in capsys.readouterr().out
    with engine.connect() as conn:
        assert (
            conn.execute(text("select count(*) from raw_contacts where payload like '%yilmaz%'"))
        ).scalar_one() == 0
    engine.dispose()

    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        funnel = client.read_latest_artifacts()
    keys = {a.key: a for a in funnel}
    assert "website_forms" in str(keys["leadflow-funnel"].data)
    assert "no_identity" in str(keys["leadflow-rejects"].data) or "None." in str(
        keys["leadflow-rejects"].data
    )


def test_dask_runner_extracts_on_a_local_cluster(
    prefect_api: None,
    sample_config: Path,
    sqlite_url: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    os.environ.setdefault("DASK_TEMPORARY_DIRECTORY", str(tmp_path / "dask"))
    _use(sample_config, sqlite_url, "runner: dask\ndask:\n  n_workers: 2\n")
    cfg = str(sample_config)
    # A dry run reads and counts (in this process, without Prefect) and writes nothing.
    assert main(["run", "--config", cfg, "--dry-run"]) == 0
    assert "would_land" in capsys.readouterr().out
    assert not Path(sqlite_url.removeprefix("sqlite:///")).exists()
    engine = db.make_engine(sqlite_url)
    # A real run lands every source from the Dask workers.
    assert (
        main(["run", "--config", cfg, "--source", "fair_istanbul", "--source", "sales_inbox"]) == 0
    )
    with engine.connect() as conn:
        raw = conn.execute(text("select count(*) from raw_contacts")).scalar_one()
        params = conn.execute(text("select params from pipeline_runs")).scalar_one()
    engine.dispose()
    assert raw == 11  # 7 fair rows + 4 mails (the bounce is skipped)
    assert "dask" in str(params)


def test_stage_progress_records_become_live_bars() -> None:
    import io
    import logging

    from rich.console import Console
    from rich.progress import Progress

    from flows.cli import _ProgressHandler
    from flows.stages import progress as stage_progress

    out = io.StringIO()
    bars = Progress(console=Console(file=out, force_terminal=True, width=100))
    handler = _ProgressHandler(bars)
    stage_progress.addHandler(handler)
    old_level = stage_progress.level
    stage_progress.setLevel(logging.INFO)
    try:
        with bars:
            for done in (2, 5):
                stage_progress.info("x", extra={"progress": ("extract", "fair_istanbul", done)})
            stage_progress.info("y", extra={"progress": ("process", "pending", 7)})
            stage_progress.info("a line without progress is not a bar")
    finally:
        stage_progress.removeHandler(handler)
        stage_progress.setLevel(old_level)
    assert {t.description: t.completed for t in bars.tasks} == {
        "extract fair_istanbul": 5,
        "process pending": 7,
    }
    assert "extract fair_istanbul" in out.getvalue()
