"""The BI marts: the same numbers on SQLite and PostgreSQL, consistent with the tables beneath."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from sqlalchemy import text

from flows.cli import main
from tests.conftest import ROOT
from tests.flows.test_pipeline import _use
from warehouse import db
from warehouse.marts import MARTS


def read(url: str, sql: str, time_zone: str | None = None) -> list[tuple[Any, ...]]:
    engine = db.make_engine(url)
    with engine.connect() as conn:
        if time_zone:
            conn.execute(text(f"SET TIME ZONE '{time_zone}'"))
        rows = [tuple(r) for r in conn.execute(text(sql))]
    engine.dispose()
    return rows


def marts(url: str, time_zone: str | None = None) -> dict[str, list[tuple[Any, ...]]]:
    query = "select * from {}"  # the names are the marts' own constants
    return {m.name: sorted(read(url, query.format(m.name), time_zone), key=repr) for m in MARTS}


def test_marts_agree_on_sqlite_and_postgresql(
    prefect_api: None, sample_config: Path, sqlite_url: str, pg_url: str
) -> None:
    _use(sample_config, sqlite_url)
    assert main(["run", "--config", str(sample_config)]) == 0
    sample_config.write_text(sample_config.read_text().replace(sqlite_url, pg_url))
    assert main(["run", "--config", str(sample_config)]) == 0
    lite, pg = marts(sqlite_url), marts(pg_url)
    for m in MARTS:
        assert lite[m.name], f"{m.name} is empty"
        assert lite[m.name] == pg[m.name], m.name
    # Days and times are UTC whatever the reader's session time zone (UTC+14 moves 03:10 Z).
    assert marts(pg_url, time_zone="Pacific/Kiritimati") == pg

    url = sqlite_url
    # Funnel: per-day rows add up to the tables.
    funnel = read(
        url, "select sum(contacts), sum(new_leads), sum(opportunities) from mart_funnel_daily"
    )
    counts = read(
        url,
        "select (select count(*) from contacts), (select count(*) from leads), "
        "(select count(*) from opportunities)",
    )
    assert funnel == counts
    day, rate = read(
        url,
        "select day, conversion_rate from mart_funnel_daily "
        "where source = 'website_forms' and new_leads > 0 order by day limit 1",
    )[0]
    assert re.fullmatch(r"\d{4}-\d{2}-\d{2}", day) and 0 <= rate <= 1
    # Pipeline: every opportunity is open at conversion; weighted = amount × probability / 100.
    pipe = read(
        url, "select sum(opportunities), sum(amount), sum(weighted_amount) from mart_pipeline"
    )
    direct = read(
        url,
        "select count(*), sum(amount), sum(amount * probability / 100.0) from opportunities",
    )
    assert pipe[0][0] == direct[0][0] > 0
    assert round(pipe[0][1], 2) == round(direct[0][1], 2)
    assert round(pipe[0][2], 2) == round(direct[0][2], 2)
    # Source quality: the fair sheet's junk rows are rejects; İsmail reached us twice.
    quality = {r[0]: r for r in read(url, "select * from mart_source_quality")}
    fair = quality["fair_istanbul"]
    source, records, contacts, rejects, dupes, leads, opps = fair[:7]
    assert records == contacts + rejects and rejects >= 3
    assert fair[8] == round(rejects / records, 4)
    assert sum(r[4] for r in quality.values()) == counts[0][0] - counts[0][1]
    # Leads: one row per lead, converted ones carry their opportunity.
    assert read(url, "select count(*), sum(is_converted) from mart_leads_current") == [
        (counts[0][1], counts[0][2])
    ]
    assert read(
        url,
        "select count(*) from mart_leads_current where is_converted = 1 and opportunity_stage is null",
    ) == [(0,)]


def test_every_mart_column_is_documented_and_commented(pg_url: str) -> None:
    engine = db.make_engine(pg_url)
    db.upgrade(engine)
    with engine.connect() as conn:
        comments = {
            (r.table_name, r.column_name): r.comment
            for r in conn.execute(
                text(
                    "select c.table_name, c.column_name, "
                    "col_description(format('%I', c.table_name)::regclass, c.ordinal_position) "
                    "as comment from information_schema.columns c "
                    "where c.table_name like 'mart_%'"
                )
            )
        }
    engine.dispose()
    dictionary = (ROOT / "docs" / "data_dictionary.md").read_text(encoding="utf-8")
    for m in MARTS:
        assert f"`{m.name}`" in dictionary
        view_cols = [c for (t, c) in comments if t == m.name]
        assert sorted(view_cols) == sorted(m.columns), m.name
        for col, doc in m.columns.items():
            assert comments[(m.name, col)] == doc
            assert f"| `{col}` |" in dictionary, f"{m.name}.{col} missing in the data dictionary"


def test_a_table_rebuilding_migration_sets_the_marts_aside(sqlite_url: str) -> None:
    """SQLite cannot rebuild a table a view reads; later migrations wrap such steps in this."""
    import sqlalchemy as sa
    from alembic.migration import MigrationContext
    from alembic.operations import Operations

    from warehouse.marts import marts_set_aside

    engine = db.make_engine(sqlite_url)
    db.upgrade(engine)
    with engine.begin() as conn:
        op = Operations(MigrationContext.configure(conn))
        with marts_set_aside(conn), op.batch_alter_table("leads", recreate="always") as batch:
            batch.add_column(sa.Column("segment", sa.Text))
    engine.dispose()
    assert read(sqlite_url, "select count(*) from mart_leads_current") == [(0,)]
    assert read(sqlite_url, "select count(*) from leads where segment is null") == [(0,)]
