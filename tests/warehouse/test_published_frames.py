"""The published checks' frames read by COPY into Arrow on PostgreSQL hold exactly the rows the
row-by-row read gives, in parts of the same bounds; and GX fingerprints no batch."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pandas as pd
import pyarrow as pa
import pytest
from sqlalchemy import Engine, Select, create_engine, literal_column, select, text, update

from flows.settings import Settings
from warehouse import load, publish, quality
from warehouse import schema as t


def _read(
    engine: Engine, touched: publish.Touched, part_rows: int | None
) -> dict[str, list[pd.DataFrame]]:
    with engine.connect() as conn, conn.begin():
        counts = quality.table_counts(conn)
        frames, _ = quality.published_frames(
            conn, datetime.now(UTC), counts, quality.Thresholds(), touched, part_rows=part_rows
        )
        return {name: list(parts) for name, parts in frames.items()}


@pytest.mark.parametrize("warehouse_url", ["postgresql"], indirect=True)
def test_arrow_reads_equal_row_reads(
    warehouse: tuple[Settings, Engine], monkeypatch: pytest.MonkeyPatch
) -> None:
    _, engine = warehouse
    o = t.opportunities
    with engine.begin() as conn:
        lead, opp = conn.execute(
            select(t.leads.c.lead_id, t.leads.c.opportunity_id)
            .where(t.leads.c.opportunity_id.is_not(None))
            .order_by(t.leads.c.lead_id)
            .limit(1)
        ).one()
        # CSV's hard cases in a value: a comma, quotes and a line break
        conn.execute(
            update(o).where(o.c.opportunity_id == opp).values(stage='Review, "final"\nround')
        )
    scoped = publish.Touched(leads={lead}, opportunities={opp})
    cases = [
        (scoped, None),
        (publish.Touched(everything=True), 2),
        (publish.Touched(everything=True), 7),
    ]
    for touched, part_rows in cases:
        arrow = _read(engine, touched, part_rows)
        with monkeypatch.context() as m:
            m.setattr(quality, "_reads_arrow", lambda conn: False)
            rows = _read(engine, touched, part_rows)
        for name in ("lead_links", "opportunities", "leads"):
            # the same rows; the parts may end elsewhere (the row read holds back a part's last
            # key whatever follows), within the same bounds
            a, r = pd.concat(arrow[name]), pd.concat(rows[name])
            pd.testing.assert_frame_equal(
                a.reset_index(drop=True), r.reset_index(drop=True), check_dtype=bool(len(a))
            )
            if part_rows is not None and name != "opportunities":
                assert all(len(f) <= part_rows for f in arrow[name])
    whole = _read(engine, publish.Touched(everything=True), None)
    stages = set(pd.concat(whole["opportunities"]).stage)
    assert 'Review, "final"\nround' in stages
    assert len(pd.concat(whole["lead_links"])) > 7  # the parts above were parts


def _batches(keys: list[str | None], sizes: list[int]) -> list[pa.RecordBatch]:
    schema = pa.schema([("key", pa.string()), ("n", pa.int64())])
    out, at = [], 0
    for size in sizes:
        part = keys[at : at + size]
        out.append(
            pa.record_batch(
                [pa.array(part, pa.string()), pa.array(range(at, at + len(part)))], schema=schema
            )
        )
        at += size
    return out


KEYS: list[str | None] = [None, None, "a", "b", "b", "b", "c", "d", "d", "d", "d", "d", "d", "e"]


@pytest.mark.parametrize("sizes", [[14], [1] * 14, [5, 0, 9], [3, 11]])
@pytest.mark.parametrize("part_rows", [1, 3, 4, 20])
def test_parts_keep_a_key_together(sizes: list[int], part_rows: int) -> None:
    batches = _batches(KEYS, sizes)
    parts = list(quality._table_parts(batches, batches[0].schema, part_rows, "key"))
    assert pa.concat_tables(parts).column("n").to_pylist() == list(range(len(KEYS)))
    seen: list[str | None] = []
    for part in parts:
        keys = part.column("key").to_pylist()
        # longer than a part only when the part is one key's run
        assert len(keys) <= part_rows or len(set(keys)) == 1
        assert not set(keys) & set(seen)  # no key in two parts
        seen += keys
    plain = list(quality._table_parts(batches, batches[0].schema, part_rows, None))
    assert [p.num_rows for p in plain[:-1]] == [part_rows] * (len(plain) - 1)


def test_no_rows_give_one_empty_part() -> None:
    schema = pa.schema([("key", pa.string())])
    (part,) = quality._table_parts([], schema, 5, "key")
    assert part.num_rows == 0 and part.schema == schema


def test_no_batch_is_fingerprinted(monkeypatch: pytest.MonkeyPatch) -> None:
    """GX hashes every pandas batch under its threshold; the gate turns that off."""
    from great_expectations.execution_engine import pandas_execution_engine

    hashed: list[int] = []
    real = pandas_execution_engine.hash_pandas_dataframe

    def counted(df: pd.DataFrame) -> str:
        hashed.append(len(df))
        return str(real(df))

    monkeypatch.setattr(pandas_execution_engine, "hash_pandas_dataframe", counted)
    gate = quality.QualityGate("run_fingerprint")
    links = pd.DataFrame({"contact_id": ["c1", "c2"], "lead_exists": [True, False]})
    report = gate.check({"lead_links": links}, quality.PUBLISHED)
    assert not report.passed  # the check did run on the rows
    assert [r.sample_ids for r in report.results if not r.success] == [["c2"]]
    assert hashed == []


@pytest.mark.parametrize("how", ["closed", "dropped"])
def test_a_read_stopped_early_leaves_the_transaction_usable(pg_url: str, how: str) -> None:
    """A part's check that fails stops the read mid-COPY; the transaction goes on (or rolls back
    with the first error, not a busy connection's)."""
    schema = pa.schema([("a", pa.string())])
    q: Select[Any] = select(literal_column("md5(g::text)").label("a")).select_from(
        text("generate_series(1, 200000) g")
    )
    engine = create_engine(pg_url)
    try:
        with engine.connect() as conn, conn.begin():
            batches = load.pg_arrow_batches(conn, q, schema, 1 << 14)
            assert next(batches).num_rows > 0
            if how == "closed":
                batches.close()
            else:
                del batches
            assert conn.execute(text("select 41 + 1")).scalar_one() == 42
    finally:
        engine.dispose()
