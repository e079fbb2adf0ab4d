"""The BI marts: the same numbers on SQLite and PostgreSQL, consistent with the tables beneath."""

from __future__ import annotations

from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, select, text

from flows.cli import main
from tests.conftest import ROOT
from tests.flows.test_pipeline import _use
from warehouse import db, marts, reports, resolution
from warehouse.marts import MARTS


def read(url: str, sql: str) -> list[tuple[Any, ...]]:
    engine = db.make_engine(url)
    with engine.connect() as conn:
        rows = [tuple(r) for r in conn.execute(text(sql))]
    engine.dispose()
    return rows


def _plain(v: Any) -> Any:
    # SQLite hands timestamps back naive (stored in UTC), PostgreSQL aware: compare them in UTC.
    if isinstance(v, datetime):
        return v.replace(tzinfo=UTC) if v.tzinfo is None else v.astimezone(UTC)
    return v


def typed_marts(engine: Engine) -> dict[str, list[tuple[Any, ...]]]:
    """Every mart read through its declared table, so each dialect hands back Python types."""
    out = {}
    with engine.connect() as conn:
        tables = marts.mart_tables(marts.schema_of(conn, None))
        for m in MARTS:
            cols = [c for c in tables[m.name].c if c.name != "definition"]  # dialect SQL digests
            rows = [tuple(_plain(v) for v in r) for r in conn.execute(select(*cols))]
            out[m.name] = sorted(rows, key=repr)
    return out


def test_marts_agree_on_sqlite_and_postgresql(
    prefect_api: None, sample_config: Path, sqlite_url: str, pg_url: str
) -> None:
    _use(sample_config, sqlite_url)
    assert main(["run", "--config", str(sample_config)]) == 0
    sample_config.write_text(sample_config.read_text().replace(sqlite_url, pg_url))
    assert main(["run", "--config", str(sample_config)]) == 0
    lite_engine, pg_engine = db.make_engine(sqlite_url), db.make_engine(pg_url)
    lite, pg = typed_marts(lite_engine), typed_marts(pg_engine)
    for m in MARTS:
        if m.name not in {"mart_status_transitions", "mart_stage_transitions"} or lite[m.name]:
            assert lite[m.name], f"{m.name} is empty"
        assert lite[m.name] == pg[m.name], m.name
    # A refresh takes the statistics of what it rewrote (autovacuum may be off, and the BI
    # reader's plans, the oldest-leads tile's index walk, depend on them).
    with pg_engine.connect() as conn:
        analyzed = set(
            conn.execute(
                text("select distinct tablename from pg_stats where schemaname = 'marts'")
            ).scalars()
        )
    assert {m.name for m in MARTS if m.refresh != marts.VIEW and pg[m.name]} - analyzed == set()
    # Days are UTC whatever the session's time zone (UTC+14 moves 03:10 Z to the next day).
    with pg_engine.connect() as conn, conn.begin() as txn:
        conn.execute(text("SET LOCAL TIME ZONE 'Pacific/Kiritimati'"))
        marts.refresh_marts(conn, as_of=resolution.data_clock(conn))
        txn.commit()
    assert typed_marts(pg_engine) == pg
    # The run summary's funnel, read from the daily funnel mart, is the one counted from the tables.
    for engine in (lite_engine, pg_engine):
        with engine.connect() as conn:
            exact = reports.funnel(conn)
            assert reports.funnel_of_marts(conn) == exact, engine.dialect.name
    assert {r["source"] for r in exact} >= {"fair_istanbul", "website_forms"}
    assert sum(r["qualified"] for r in exact) > 0
    # here every qualified lead is converted: qualify one that is not, so the columns differ
    with pg_engine.connect() as conn, conn.begin() as txn:
        conn.execute(
            text(
                "update leads set status = 'Qualified' where lead_id = "
                "(select min(lead_id) from leads where opportunity_id is null)"
            )
        )
        marts.refresh_marts(conn, as_of=resolution.data_clock(conn))
        moved = reports.funnel(conn)
        assert moved != exact and reports.funnel_of_marts(conn) == moved
        txn.rollback()
    lite_engine.dispose()
    pg_engine.dispose()

    url = sqlite_url
    # Funnel: per-day, per-week and per-month rows all add up to the tables.
    counts = read(
        url,
        "select (select count(*) from contacts), (select count(*) from leads), "
        "(select count(*) from opportunities)",
    )
    for mart in ("mart_funnel_daily", "mart_funnel_weekly", "mart_funnel_monthly"):
        got = read(url, f"select sum(contacts), sum(new_leads), sum(opportunities) from {mart}")  # noqa: S608
        assert got == counts, mart
    (day,) = read(url, "select min(day) from mart_funnel_daily")[0]
    assert isinstance(date.fromisoformat(day), date)
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
    assert records == contacts + rejects and rejects >= 2  # "test" and the ragged row
    assert fair[8] == round(rejects / records, 4)
    assert sum(r[4] for r in quality.values()) == counts[0][0] - counts[0][1]
    # Leads: one row per lead, converted ones carry their opportunity; aging has them all.
    assert read(url, "select count(*), sum(is_converted) from mart_leads_current") == [
        (counts[0][1], counts[0][2])
    ]
    assert read(
        url,
        "select count(*) from mart_leads_current where is_converted and opportunity_stage is null",
    ) == [(0,)]
    # Aging runs on the data's clock (the newest record received): the newest lead's age is the
    # time from its first sighting to that record (here a later mail to an existing lead).
    ((as_of, newest),) = read(
        url, "select (select max(received_at) from raw_contacts), max(first_seen_at) from leads"
    )
    age = (datetime.fromisoformat(as_of) - datetime.fromisoformat(newest)).total_seconds() / 86400
    assert read(url, "select count(*), min(days_since_first_seen) from mart_lead_aging") == [
        (counts[0][1], round(age, 2))
    ]
    assert read(url, "select count(*) from mart_stage_transitions where from_stage is null") == [
        (counts[0][2],)
    ]
    # The samples state budgets in TRY, USD and EUR and the config has no rates: named warnings.
    assert read(url, "select count(*) from mart_opportunities where amount is not null") != [(0,)]
    warnings = read(
        url,
        "select column_name, sample_ids from dq_results "
        "where expectation = 'fx_rate_available' and not success",
    )
    assert {w[0] for w in warnings} == {"TRY", "USD"}, warnings


def test_every_mart_column_is_documented_and_commented(pg_url: str) -> None:
    engine = db.make_engine(pg_url)
    db.upgrade(engine)
    with engine.begin() as conn:
        marts.refresh_marts(conn, as_of=None)  # created empty before any data
    with engine.connect() as conn:
        comments = {
            (r.table_name, r.column_name): r.comment
            for r in conn.execute(
                text(
                    "select c.table_name, c.column_name, "
                    "col_description(format('%I.%I', c.table_schema, c.table_name)::regclass, "
                    "c.ordinal_position) as comment from information_schema.columns c "
                    "where c.table_schema = 'marts'"
                )
            )
        }
        tables: dict[str, str] = dict(
            conn.execute(
                text(
                    "select c.relname, obj_description(c.oid, 'pg_class') from pg_class c "
                    "join pg_namespace n on n.oid = c.relnamespace "
                    "where n.nspname = 'marts' and c.relkind in ('r', 'v')"
                )
            ).all()
        )
        # Nothing of the old views is left in the default schema.
        old = conn.execute(
            text(
                "select count(*) from pg_views "
                "where viewname like 'mart_%' and schemaname <> 'marts'"
            )
        )
        assert old.scalar_one() == 0
    engine.dispose()
    dictionary = (ROOT / "docs" / "data_dictionary.md").read_text(encoding="utf-8")
    assert sorted(tables) == sorted(m.name for m in MARTS)
    for m in MARTS:
        assert f"`{m.name}`" in dictionary
        assert tables[m.name] == m.doc
        cols = [c for (t, c) in comments if t == m.name]
        assert sorted(cols) == sorted(m.column_docs), m.name
        section = dictionary.split(f"### `{m.name}`", 1)[1].split("\n### ", 1)[0]
        for col in m.columns:
            assert comments[(m.name, col.name)] == col.doc
            line = f"| `{col.name}` | {marts.type_name(col)} | {col.doc} |"
            assert line in section, f"{m.name}.{col.name}"


def test_table_rebuilding_migrations_run_beside_the_marts(sqlite_url: str) -> None:
    """SQLite could not rebuild a table a view read; mart tables do not stand in the way."""
    import sqlalchemy as sa
    from alembic.migration import MigrationContext
    from alembic.operations import Operations

    from warehouse.migrations.legacy_views import marts_set_aside

    engine = db.make_engine(sqlite_url)
    db.upgrade(engine, "0007")  # the old views are there: a migration of that time sets them aside
    with engine.begin() as conn:
        op = Operations(MigrationContext.configure(conn))
        with marts_set_aside(conn), op.batch_alter_table("leads", recreate="always") as batch:
            batch.add_column(sa.Column("segment", sa.Text))
    assert read(sqlite_url, "select count(*) from mart_leads_current") == [(0,)]
    db.upgrade(engine)
    with engine.begin() as conn:
        marts.refresh_marts(conn, as_of=None)
        op = Operations(MigrationContext.configure(conn))
        with marts_set_aside(conn), op.batch_alter_table("leads", recreate="always") as batch:
            batch.drop_column("segment")
    engine.dispose()
    assert read(sqlite_url, "select type from sqlite_master where name = 'mart_leads_current'") == [
        ("table",)
    ]


def _forecast_mart_changed(url: str) -> Engine:
    """A warehouse with its marts, whose catalog holds another definition of mart_forecast."""
    engine = db.make_engine(url)
    db.upgrade(engine)
    with engine.begin() as conn:
        marts.refresh_marts(conn, as_of=None)
        conn.execute(
            text("update mart_catalog set definition = 'old' where mart = 'mart_forecast'")
        )
    return engine


def test_a_changed_definition_recreates_only_that_mart(sqlite_url: str) -> None:
    engine = _forecast_mart_changed(sqlite_url)
    with engine.begin() as conn:
        conn.execute(text("alter table mart_forecast add column stale integer"))
        conn.execute(text("alter table mart_pipeline add column kept integer"))
    with engine.begin() as conn:
        marts.refresh_marts(conn, as_of=None)
        cols = {r[1] for r in conn.execute(text("pragma table_info(mart_forecast)"))}
        kept = {r[1] for r in conn.execute(text("pragma table_info(mart_pipeline)"))}
    engine.dispose()
    assert "stale" not in cols and "kept" in kept


def test_a_mart_change_cut_short_leaves_the_marts_as_they_were(sqlite_url: str) -> None:
    """Recreating a changed mart drops and creates tables and views before it writes a row: a
    process killed in between must leave the old marts, not a dropped one (on SQLite each DDL
    statement committed on its own)."""
    from sqlalchemy import event

    engine = _forecast_mart_changed(sqlite_url)
    names = "select name from sqlite_master where name like 'mart%' order by name"
    before = read(sqlite_url, names)

    def killed(_conn: object, _cur: object, statement: str, *_: object) -> None:
        if statement.lstrip().upper().startswith("CREATE TABLE"):
            raise KeyboardInterrupt("killed mid-change")  # after the views were dropped

    event.listen(engine, "before_cursor_execute", killed)
    try:
        with engine.begin() as conn:
            marts.refresh_marts(conn, as_of=None)
    except KeyboardInterrupt:
        pass
    else:
        raise AssertionError("the change was not cut short")
    event.remove(engine, "before_cursor_execute", killed)
    assert read(sqlite_url, names) == before
    assert read(sqlite_url, "select definition from mart_catalog where mart = 'mart_forecast'") == [
        ("old",)
    ]
    with engine.begin() as conn:
        marts.refresh_marts(conn, as_of=None)
    assert read(sqlite_url, names) == before
    engine.dispose()


def test_the_readme_shows_a_query_per_mart() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("### The BI marts", 1)[1].split("\n## ", 1)[0]
    queries = " ".join(block.split("```", 1)[0] for block in section.split("```sql")[1:])
    missing = [m.name for m in MARTS if f"FROM {m.name}" not in queries]
    assert missing == []
