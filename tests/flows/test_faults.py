"""Faults at the sources: retried, or failed cleanly with the cursor unmoved; nothing is lost."""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, select

from connectors import spreadsheet
from connectors.base import content_hash
from flows.settings import load_settings
from flows.stages import SourceReadError, extract_and_land
from tests.conftest import write_config
from tests.faultserver import FaultServer, serve, source_yaml, submissions
from warehouse import db
from warehouse.schema import raw_contacts, rejects, source_cursors


def _engine(url: str) -> Engine:
    engine = db.make_engine(url)
    db.upgrade(engine)
    return engine


def _land(
    tmp_path: Path, url: str, engine: Engine, attempts: int = 4, strict: bool = False
) -> dict[str, int]:
    cfg = write_config(tmp_path / "lf.yaml", f"sqlite:///{tmp_path}/w.db", "sources:\n")
    cfg.write_text(cfg.read_text() + source_yaml("forms", url, attempts=attempts))
    source = load_settings(cfg).source("forms")
    return extract_and_land(engine, source, "run_t", raise_read_failures=strict).as_dict()


def _state(engine: Engine) -> tuple[set[str], dict[str, Any], list[Any]]:
    with engine.connect() as conn:
        ids = {r.source_record_id for r in conn.execute(select(raw_contacts))}
        cur = {r.source: r.cursor for r in conn.execute(select(source_cursors))}
        rej = [(r.code, r.message) for r in conn.execute(select(rejects))]
    return ids, cur, rej


@pytest.mark.parametrize(
    "script",
    [
        ["429", "500", "502", "503"],
        ["reset", "reset"],
        ["hang"],
        ["truncated", "truncated_json", "garbage"],
    ],
    ids=["429-5xx", "resets", "timeout", "truncated"],
)
def test_transient_faults_are_retried_and_every_record_lands(
    tmp_path: Path, script: list[str]
) -> None:
    engine = _engine(f"sqlite:///{tmp_path}/w.db")
    # The faults hit the first request and again the second page: each is retried in place.
    fake = FaultServer(submissions(5), script=list(script), page_faults={2: list(script)})
    with serve(fake):
        stats = _land(tmp_path, fake.url, engine, attempts=len(script) + 1)
    ids, cur, rej = _state(engine)
    assert ids == {f"sub-{i:03d}" for i in range(5)}
    assert rej == []
    assert stats["landed"] == 5 and stats["reconciled"] == 1
    assert cur["forms"]["submitted_until"].startswith("2026-05-04T09:04")
    engine.dispose()


@pytest.mark.parametrize("fault", ["500", "reset", "hang", "truncated_json"])
def test_a_source_that_keeps_failing_keeps_what_it_landed_and_its_cursor_short(
    tmp_path: Path, fault: str
) -> None:
    engine = _engine(f"sqlite:///{tmp_path}/w.db")
    fake = FaultServer(submissions(6), always={2: fault})
    with serve(fake):
        _land(tmp_path, fake.url, engine)
    ids, cur, rej = _state(engine)
    # Page 1 landed with its cursor; page 2 failed for good: a reject says why, the cursor stays
    # at the last record of page 1, so nothing after it can be skipped by the next run.
    assert ids == {"sub-000", "sub-001"}
    assert cur["forms"]["submitted_until"].startswith("2026-05-04T09:01")
    ((code, message),) = rej
    assert code == "http_error" and "/api/submissions" in message
    # The source heals: the next run reads on from the cursor and nothing is lost.
    fake.always.clear()
    with serve(fake):
        _land(tmp_path, fake.url, engine)
    ids, cur, _ = _state(engine)
    assert ids == {f"sub-{i:03d}" for i in range(6)}
    assert cur["forms"]["submitted_until"].startswith("2026-05-04T09:05")
    engine.dispose()


def test_a_source_failing_from_its_first_request_raises_and_leaves_no_cursor(
    tmp_path: Path,
) -> None:
    engine = _engine(f"sqlite:///{tmp_path}/w.db")
    fake = FaultServer(submissions(4), always={1: "503"})
    with serve(fake):
        with pytest.raises(SourceReadError, match="gave up after 4 tries: HTTP 503") as err:
            _land(tmp_path, fake.url, engine, strict=True)
    assert err.value.stats.landed == 0 and err.value.stats.rejected == 1
    # pickled (a Dask worker's failure) it keeps its counts
    assert pickle.loads(pickle.dumps(err.value)).stats == err.value.stats
    ids, cur, _ = _state(engine)
    assert ids == set() and not cur.get("forms")  # no position: the next run starts over
    engine.dispose()


def test_a_hanging_server_is_cut_off_by_the_timeout(tmp_path: Path) -> None:
    engine = _engine(f"sqlite:///{tmp_path}/w.db")
    fake = FaultServer(submissions(2), always={1: "hang"}, hang_seconds=30)
    import time

    t0 = time.monotonic()
    with serve(fake):
        with pytest.raises(SourceReadError, match="Timeout"):
            _land(tmp_path, fake.url, engine, strict=True)
    # 4 attempts of a 0.5 s read timeout, not 30 s of hanging
    assert time.monotonic() - t0 < timedelta(seconds=10).total_seconds()
    engine.dispose()


def _sheet(rows: int) -> bytes:
    lines = ["Name;Email;Company"] + [f"Person {i};p{i}@firm{i}.com;Firm {i}" for i in range(rows)]
    return ("\n".join(lines) + "\n").encode()


REWRITER = """
import random, sys, time
from pathlib import Path
folder = Path(sys.argv[1])
versions = [(folder / "new.bin").read_bytes(), (folder / "old.bin").read_bytes()]
rng = random.Random(5)
while True:
    for version in versions:
        with open(folder / "sheet.csv", "wb") as fh:
            for at in range(0, len(version), 2048):
                fh.write(version[at : at + 2048])
                fh.flush()
                time.sleep(0.003)
        time.sleep(rng.uniform(0, 0.8))
"""


def test_a_sheet_rewritten_while_it_is_read_lands_one_whole_version_or_waits(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A writer pausing longer than this mid-write cannot be told from a finished one (only an
    # atomic rename can say so); the writer below pauses 3 ms between pieces.
    monkeypatch.setattr(spreadsheet, "SETTLE_SECONDS", 0.5)
    old, new = _sheet(200), _sheet(300)  # the new version keeps the old rows and adds 100
    sheet = tmp_path / "sheet.csv"
    sheet.write_bytes(old)
    os.utime(sheet, (time.time() - 60, time.time() - 60))
    (tmp_path / "old.bin").write_bytes(old)
    (tmp_path / "new.bin").write_bytes(new)
    cfg = write_config(
        tmp_path / "lf.yaml",
        f"sqlite:///{tmp_path}/w.db",
        "sources:\n  - {name: fair, kind: spreadsheet, path: sheet.csv}\n",
    )
    source = load_settings(cfg).source("fair")
    engine = _engine(f"sqlite:///{tmp_path}/w.db")
    versions = {content_hash(old), content_hash(new)}
    rows = {f"Person {i}" for i in range(300)}
    # Another process rewrites the sheet in place as an editor does (truncate, then write in
    # pieces), alternating the two versions with rests of 0–0.8 s between them.
    writer = subprocess.Popen([sys.executable, "-c", REWRITER, str(tmp_path)])
    started = sheet.stat().st_mtime
    while sheet.stat().st_mtime == started:  # the writer is at work
        time.sleep(0.01)
    outcomes = []
    try:
        for n in range(8):
            try:
                extract_and_land(engine, source, f"run_{n}", raise_read_failures=True)
                outcomes.append("landed")
            except SourceReadError as exc:
                assert "sheet.csv kept changing while it was read" in str(exc)
                outcomes.append("changing")
            ids, cur, rej = _state(engine)
            with engine.connect() as conn:
                names = {json.loads(r.payload)["Name"] for r in conn.execute(select(raw_contacts))}
            # Only whole rows of a whole version ever land, and the cursor holds such a version.
            assert names <= rows
            assert all(code == "file_changing" for code, _ in rej), rej
            files = cur.get("fair", {}).get("files", {})
            assert set(files.values()) <= versions
    finally:
        writer.terminate()
        writer.wait()
    sheet.write_bytes(new)
    os.utime(sheet, (time.time() - 60, time.time() - 60))
    extract_and_land(engine, source, "run_last", raise_read_failures=True)
    ids, cur, _ = _state(engine)
    assert len(ids) == 300  # nothing lost, nothing twice
    assert list(cur["fair"]["files"].values()) == [content_hash(new)]
    print(outcomes)
    engine.dispose()
