"""The whole pipeline on the bundled samples, on SQLite and on the real PostgreSQL."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, text

from flows.cli import main
from warehouse import db
from warehouse.schema import DATA_TABLES, metadata


def snapshot(url: str) -> dict[str, list[tuple[Any, ...]]]:
    """Every data table's rows, sorted, so two warehouses can be compared for equality."""
    engine = db.make_engine(url)
    out: dict[str, list[tuple[Any, ...]]] = {}
    with engine.connect() as conn:
        for name in DATA_TABLES:
            rows = conn.execute(select(metadata.tables[name])).all()
            out[name] = sorted(tuple(map(repr, r)) for r in rows)
    engine.dispose()
    return out


def count(url: str, sql: str) -> int:
    engine = db.make_engine(url)
    with engine.connect() as conn:
        n = conn.execute(text(sql)).scalar_one()
    engine.dispose()
    return int(n)


def _use(cfg: Path, url: str) -> None:
    cfg.write_text(cfg.read_text().replace("sqlite:///leadflow.db", url))


def test_pipeline_runs_twice_with_identical_tables(
    prefect_api: None, sample_config: Path, warehouse_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    _use(sample_config, warehouse_url)
    assert main(["run", "--config", str(sample_config)]) == 0
    out = capsys.readouterr().out
    assert "Funnel" in out and "TOTAL" in out
    first = snapshot(warehouse_url)

    contacts = count(warehouse_url, "select count(*) from contacts")
    leads = count(warehouse_url, "select count(*) from leads")
    opps = count(warehouse_url, "select count(*) from opportunities")
    assert 0 < opps < leads < contacts, (opps, leads, contacts)
    # Cross-source duplicates merged: İsmail Işık reached us by the fair sheet and the web form.
    assert (
        count(
            warehouse_url,
            "select contact_count from leads where email = 'ismail.isik@isiktekstil.com.tr'",
        )
        == 2
    )
    # Junk is kept with a reason, not dropped.
    assert count(warehouse_url, "select count(*) from rejects where code = 'no_identity'") >= 3
    assert count(warehouse_url, "select count(*) from rejects where code = 'ragged_row'") == 1
    # Every opportunity's lead exists and points back at it.
    assert (
        count(
            warehouse_url,
            "select count(*) from opportunities o join leads l "
            "on l.lead_id = o.lead_id and l.opportunity_id = o.opportunity_id",
        )
        == opps
    )

    assert main(["run", "--config", str(sample_config)]) == 0
    assert snapshot(warehouse_url) == first
    assert (
        count(warehouse_url, "select count(*) from pipeline_runs where status = 'succeeded'") == 2
    )


def test_rebuilding_from_scratch_gives_the_same_ids(
    prefect_api: None, sample_config: Path, tmp_path: Path
) -> None:
    a, b = f"sqlite:///{tmp_path / 'a.db'}", f"sqlite:///{tmp_path / 'b.db'}"
    _use(sample_config, a)
    assert main(["run", "--config", str(sample_config)]) == 0
    sample_config.write_text(sample_config.read_text().replace(a, b))
    assert main(["run", "--config", str(sample_config)]) == 0
    ids = "select lead_id from leads order by 1"
    ea, eb = db.make_engine(a), db.make_engine(b)
    with ea.connect() as ca, eb.connect() as cb:
        assert ca.execute(text(ids)).all() == cb.execute(text(ids)).all()
        opp = "select opportunity_id, stage, amount, close_date from opportunities order by 1"
        assert ca.execute(text(opp)).all() == cb.execute(text(opp)).all()


def test_new_file_rows_join_existing_leads(
    prefect_api: None, sample_config: Path, sqlite_url: str
) -> None:
    _use(sample_config, sqlite_url)
    assert main(["run", "--config", str(sample_config)]) == 0
    before = count(sqlite_url, "select count(*) from leads")
    lead = count(sqlite_url, "select count(*) from leads where email = 'john@acme-corp.com'")
    assert lead == 1
    csv = sample_config.parent / "sources" / "fair_istanbul_2026.csv"
    csv.write_text(csv.read_text() + "J. Smith;JOHN@acme-corp.com;;;;;USA;;;;Evet\n")
    assert main(["run", "--config", str(sample_config)]) == 0
    assert count(sqlite_url, "select count(*) from leads") == before
    assert (
        count(sqlite_url, "select contact_count from leads where email = 'john@acme-corp.com'") == 4
    )


def test_a_smaller_chunk_size_publishes_the_same_tables(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from flows import stages
    from tests import crashkit

    config = crashkit.write_sample(tmp_path, rows=600)
    calls: list[int] = []
    chunk = stages.process_chunk

    def counted(conn: Any, rows: list[Any], *args: Any, **kwargs: Any) -> Any:
        calls.append(len(rows))
        return chunk(conn, rows, *args, **kwargs)

    monkeypatch.setattr(stages, "process_chunk", counted)
    whole = f"sqlite:///{tmp_path / 'whole.db'}"
    crashkit.run_pipeline(str(config), whole)
    assert len(calls) == 1
    calls.clear()
    small = tmp_path / "small.yaml"
    small.write_text(
        config.read_text(encoding="utf-8") + "resolution:\n  chunk_size: 100\n", encoding="utf-8"
    )
    # Each chunk after the first is normalized ahead, on a thread of its own, while the chunk
    # before it is written: each write waits (2 s at most) for the next chunk's normalizing to
    # begin, which it never would if normalizing came after the write.
    threads: set[str] = set()
    begun = threading.Condition()
    normalized, written, overlapped = [0], [0], []
    normalize_chunk, write = stages.normalize_chunk, stages.publish.publish

    def normalizing(rows: list[Any], *args: Any) -> Any:
        threads.add(threading.current_thread().name)
        with begun:
            normalized[0] += 1
            begun.notify_all()
        return normalize_chunk(rows, *args)

    def writing(*args: Any, **kwargs: Any) -> Any:
        written[0] += 1
        with begun:
            overlapped.append(begun.wait_for(lambda: normalized[0] > written[0], timeout=2))
        return write(*args, **kwargs)

    monkeypatch.setattr(stages, "normalize_chunk", normalizing)
    monkeypatch.setattr(stages.publish, "publish", writing)
    chunked = f"sqlite:///{tmp_path / 'chunked.db'}"
    crashkit.run_pipeline(str(small), chunked)
    assert len(calls) > 5 and max(calls) == 100, calls
    assert threads == {"leadflow-normalize_0"}
    assert overlapped == [True] * (len(calls) - 1) + [False]  # the last chunk has none after it
    # Chunks show only in the lineage: the earlier contact of a pair split across chunks was
    # published as a new lead before the later one linked to it, and a lead's status after each
    # chunk is history. Who is who, and everything published of them, are the same.
    got, want = crashkit.snapshot(chunked), crashkit.snapshot(whole)
    lineage = {"lead_links", "lead_status_history"}
    assert {k: v for k, v in got.items() if k not in lineage} == {
        k: v for k, v in want.items() if k not in lineage
    }
    assert _memberships(chunked) == _memberships(whole)


def _memberships(url: str) -> list[tuple[Any, ...]]:
    engine = db.make_engine(url)
    with engine.connect() as conn:
        rows = conn.execute(text("select contact_id, lead_id from lead_links")).all()
    engine.dispose()
    return sorted(tuple(r) for r in rows)
