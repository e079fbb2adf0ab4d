"""A run refreshes the marts for what it touched: after every run of a sequence (new leads, a
contact joining a lead, two converted leads merging, CRM stage moves, new exchange rates) the
incrementally refreshed marts hold exactly the rows a full refresh gives, on both dialects."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Connection, Engine, event, insert, inspect, select, text, update

from flows import stages
from flows.settings import Settings, load_settings
from tests.conftest import write_config
from tests.warehouse.conftest import land
from tests.warehouse.test_marts import _plain
from warehouse import db, marts, quality, runs
from warehouse import schema as t
from warehouse.publish import Touched

HEADER = "Ad Soyad;E-posta;Telefon;Şirket;Ünvan;Şehir;Ülke;Bütçe;Zamanlama;İlgi Alanı;KVKK Onayı\n"
# Ayşe twice (work email, mobile): two qualified leads, both converted; two people who do not
# qualify; a euro and a dollar budget so every currency needs a rate.
FIRST = HEADER + (
    "Ayşe Kaya;ayse@kaya-lojistik.com.tr;;Kaya Lojistik A.Ş.;Genel Müdür;Ankara;Türkiye;"
    "500.000 TL;3 ay içinde;Forklift filosu için teklif;Evet\n"
    "Ayşe Kaya;;0532 123 45 67;;Satın Alma Müdürü;İzmir;Türkiye;400.000 TL;2 ay;"
    "Depo raf sistemleri fiyat teklifi;Evet\n"
    "Mehmet Demir;mehmet@demir-insaat.com.tr;0533 222 33 44;Demir İnşaat;Proje Müdürü;İstanbul;"
    "Türkiye;20.000 EUR;1 ay;Vinç kiralama teklifi;Evet\n"
    "Zeynep Ak;zeynep.ak@gmail.com;;;;Bursa;Türkiye;;;Bülten;Hayır\n"
)
# New people, and Zeynep again with her phone (she joins her lead).
SECOND = HEADER + (
    "Can Yılmaz;can@yilmaz-gida.com.tr;0535 444 55 66;Yılmaz Gıda;Satın Alma Müdürü;Konya;"
    "Türkiye;30.000 USD;2 ay;Soğuk hava deposu teklifi;Evet\n"
    "Elif Şahin;elif@sahin-tekstil.com.tr;;Şahin Tekstil;Stajyer;Denizli;Türkiye;;;Katalog;Evet\n"
    "Zeynep Ak;zeynep.ak@gmail.com;0536 777 88 99;;;Bursa;Türkiye;;;Bülten;Hayır\n"
)
# Ayşe with both: her two converted leads are one person.
BRIDGE = HEADER + (
    "Ayşe Kaya;ayse@kaya-lojistik.com.tr;0532 123 45 67;Kaya Lojistik A.Ş.;Genel Müdür;Ankara;"
    "Türkiye;500.000 TL;3 ay içinde;Forklift teklif;Evet\n"
)
MORE = HEADER + (
    "Burak Öz;burak@oz-makina.com.tr;0537 111 22 33;Öz Makina;Genel Müdür;İzmir;Türkiye;"
    "50.000 EUR;1 ay;Torna tezgahı teklifi;Evet\n"
)


def _rates(path: Path, usd: str, try_: str) -> None:
    today = datetime.now(UTC).date()
    days = [today + timedelta(days=n) for n in range(-3, 2)]
    path.write_text(
        "Date,USD,TRY,\n" + "".join(f"{d.isoformat()},{usd},{try_},\n" for d in days),
        encoding="utf-8",
    )


def snapshot(conn: Connection) -> dict[str, list[tuple[Any, ...]]]:
    """Every mart's rows, read through its declared table (so each dialect hands back the
    declared Python types), sorted."""
    tables = marts.mart_tables(marts.schema_of(conn, None))
    out = {}
    for m in marts.MARTS:
        rows = [tuple(_plain(v) for v in r) for r in conn.execute(select(tables[m.name]))]
        out[m.name] = sorted(rows, key=repr)
    return out


def assert_same_as_full(engine: Engine, settings: Settings) -> dict[str, list[tuple[Any, ...]]]:
    """The marts as the run left them equal the marts a full refresh gives (rolled back)."""
    with engine.connect() as conn:
        incremental = snapshot(conn)
        conn.rollback()
        with conn.begin() as txn:
            refreshed = stages.refresh_marts(conn, settings)
            assert refreshed.full
            full = snapshot(conn)
            txn.rollback()
    for m in marts.MARTS:
        assert incremental[m.name] == full[m.name], m.name
    return incremental


def _scalar(engine: Engine, sql: str) -> Any:
    with engine.connect() as conn:
        return conn.execute(text(sql)).scalar_one()


@pytest.fixture
def by_key(monkeypatch: pytest.MonkeyPatch) -> None:
    """A run keeps its keys however many it touched. These warehouses are tiny, and their runs
    are not recorded (no previous counts): each run would count as touching everything and
    refresh the marts whole (see the last test). The refresh by key is what is tested here."""
    monkeypatch.setattr(quality, "scope_limits", lambda counts: {})


@pytest.mark.usefixtures("by_key")
def test_incremental_refreshes_equal_a_full_refresh(warehouse_url: str, tmp_path: Path) -> None:
    sheets, crm = tmp_path / "sheets", tmp_path / "crm"
    sheets.mkdir()
    crm.mkdir()
    rates = tmp_path / "eurofxref-hist.csv"
    _rates(rates, "1.08", "38.5")
    cfg = write_config(
        tmp_path / "leadflow.yaml",
        warehouse_url,
        f"default_region: TR\nsources:\n  - name: fair\n    kind: spreadsheet\n"
        f"    path: {sheets}\n"
        f"opportunity_updates:\n  - name: crm\n    path: {crm}/*.csv\n    layout: plain\n"
        f"fx:\n  rates: [{rates}]\n"
        f"quality:\n  docs_dir: {tmp_path / 'docs'}\n",
    )
    settings = load_settings(cfg)
    engine = db.make_engine(warehouse_url)
    db.upgrade(engine)

    def run(run_id: str) -> stages.ProcessStats:
        land(engine, settings, run_id)
        return stages.process_pending(engine, settings, run_id)

    try:
        # The first run builds every mart whole (they did not exist); two leads are converted.
        (sheets / "1.csv").write_text(FIRST, encoding="utf-8")
        run("run_1")
        first = assert_same_as_full(engine, settings)
        assert len(first["mart_opportunities"]) == 3  # Ayşe twice, Mehmet
        with engine.connect() as conn:
            assert (
                conn.execute(text("select count(*) from leads")).scalar_one()
                == len(first["mart_leads_current"])
                == 4
            )

        # New leads, one converted; a contact joins an existing lead (incremental from here on).
        (sheets / "2.csv").write_text(SECOND, encoding="utf-8")
        run("run_2")
        second = assert_same_as_full(engine, settings)
        assert len(second["mart_leads_current"]) == 6
        assert len(second["mart_contacts"]) == 7

        # Ayşe's two converted leads merge: one opportunity stays open, the other closes.
        (sheets / "3.csv").write_text(BRIDGE, encoding="utf-8")
        run("run_3")
        third = assert_same_as_full(engine, settings)
        assert len(third["mart_leads_current"]) == 5

        # The CRM moves an open opportunity on and wins another; a new lead arrives with it.
        with engine.connect() as conn:
            opps = (
                conn.execute(
                    text(
                        "select opportunity_id from opportunities where stage not like 'Closed%' "
                        "order by opportunity_id"
                    )
                )
                .scalars()
                .all()
            )
        assert len(opps) >= 2
        clock = _scalar(engine, "select max(received_at) from contacts")
        at = (clock if isinstance(clock, datetime) else datetime.fromisoformat(clock)).replace(
            tzinfo=UTC
        )
        (crm / "export.csv").write_text(
            "opportunity_id,stage,changed_at\n"
            f"{opps[0]},Negotiation/Review,{(at + timedelta(minutes=1)).isoformat()}\n"
            f"{opps[1]},Closed Won,{(at + timedelta(minutes=2)).isoformat()}\n",
            encoding="utf-8",
        )
        (sheets / "4.csv").write_text(MORE, encoding="utf-8")
        stats = run("run_4")
        assert stats.opportunity_updates["opportunity_stage_moves"] == 2
        fourth = assert_same_as_full(engine, settings)
        stages_now = {r[0]: r[4] for r in fourth["mart_opportunities"]}
        assert stages_now[opps[0]] == "Negotiation/Review"
        assert stages_now[opps[1]] == "Closed Won"

        # New rates: every converted amount changes, though no opportunity was touched.
        _rates(rates, "1.12", "41.0")
        run("run_5")
        fifth = assert_same_as_full(engine, settings)
        assert fifth["mart_fx_factors"] != fourth["mart_fx_factors"]
        assert fifth["mart_opportunities"] != fourth["mart_opportunities"]

        # A run with nothing new changes nothing.
        run("run_6")
        assert assert_same_as_full(engine, settings) == fifth
    finally:
        engine.dispose()


def fair_warehouse(warehouse_url: str, tmp_path: Path) -> tuple[Path, Settings, Engine]:
    """An upgraded warehouse and the settings of one spreadsheet source reading `sheets/`."""
    sheets = tmp_path / "sheets"
    sheets.mkdir()
    cfg = write_config(
        tmp_path / "leadflow.yaml",
        warehouse_url,
        f"default_region: TR\nsources:\n  - name: fair\n    kind: spreadsheet\n"
        f"    path: {sheets}\nquality:\n  docs_dir: {tmp_path / 'docs'}\n",
    )
    engine = db.make_engine(warehouse_url)
    db.upgrade(engine)
    return sheets, load_settings(cfg), engine


def refreshes(monkeypatch: pytest.MonkeyPatch) -> list[bool]:
    """Whether each mart refresh from now on is a full one, in order."""
    seen: list[bool] = []
    original = marts.refresh_marts

    def spy(conn: Connection, **kw: Any) -> marts.MartRefresh:
        r = original(conn, **kw)
        seen.append(r.full)
        return r

    monkeypatch.setattr(marts, "refresh_marts", spy)
    return seen


@pytest.mark.usefixtures("by_key")
def test_a_run_refreshes_incrementally_and_a_rebuild_in_full(
    warehouse_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sheets, settings, engine = fair_warehouse(warehouse_url, tmp_path)
    seen = refreshes(monkeypatch)
    try:
        (sheets / "1.csv").write_text(FIRST, encoding="utf-8")
        land(engine, settings, "run_1")
        stages.process_pending(engine, settings, "run_1")
        (sheets / "2.csv").write_text(SECOND, encoding="utf-8")
        land(engine, settings, "run_2")
        stages.process_pending(engine, settings, "run_2")
        stages.process_pending(engine, settings, "run_3", rebuild=True)
        assert seen == [True, False, True]  # created, then a run's keys, then a rebuild
        assert_same_as_full(engine, settings)
    finally:
        engine.dispose()


@pytest.mark.usefixtures("by_key")
def test_a_group_left_empty_goes(warehouse_url: str, tmp_path: Path) -> None:
    """Counts are added to, not recounted: a lead alone in its source, status and day of last
    touch moves on (another status, a touch a day later), and that group's row goes, as a full
    refresh has it, instead of staying with no leads."""
    sheets, settings, engine = fair_warehouse(warehouse_url, tmp_path)
    try:
        (sheets / "1.csv").write_text(FIRST, encoding="utf-8")
        land(engine, settings, "run_1")
        stages.process_pending(engine, settings, "run_1")
        with engine.begin() as conn:
            tables = marts.mart_tables(marts.schema_of(conn, None))
            dates = tables[marts.LEAD_DATES.name]
            rows = conn.execute(
                select(dates.c.lead_id, dates.c.lead_source, dates.c.status, dates.c.last_touch_on)
            ).all()
            alone = [r for r in rows if sum(tuple(o[1:]) == tuple(r[1:]) for o in rows) == 1]
            assert alone, "every group holds two leads or more"
            lead_id, source, old, day = alone[0]
            new = "Unqualified" if old != "Unqualified" else "Nurturing"
            lead = conn.execute(select(t.leads).where(t.leads.c.lead_id == lead_id)).one()
            conn.execute(
                update(t.leads)
                .where(t.leads.c.lead_id == lead_id)
                .values(status=new, last_seen_at=lead.last_seen_at + timedelta(days=1))
            )
            conn.execute(
                insert(t.lead_status_history).values(
                    history_id="moved-on",
                    lead_id=lead_id,
                    from_status=old,
                    to_status=new,
                    changed_at=lead.last_seen_at + timedelta(days=1),
                    score=lead.score,
                    reason="a test moves it on",
                    rules_version=lead.rules_version,
                )
            )
            refreshed = stages.refresh_marts(conn, settings, touched=Touched(leads={lead_id}))
            assert not refreshed.full
        after = assert_same_as_full(engine, settings)
        touch_days = {r[:3] for r in after[marts.TOUCH_DAYS.name]}
        assert (source, old, day) not in touch_days
        assert (source, new, day + timedelta(days=1)) in touch_days
    finally:
        engine.dispose()


def test_a_run_that_touches_most_of_a_table_refreshes_the_marts_whole(
    warehouse_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Past half of a table by the previous run's counts, a run's keys are given up for
    `everything` (they would cost more than the table): the marts are rebuilt whole."""
    sheets, settings, engine = fair_warehouse(warehouse_url, tmp_path)
    seen = refreshes(monkeypatch)
    try:
        (sheets / "1.csv").write_text(FIRST, encoding="utf-8")
        land(engine, settings, "run_1")
        with engine.begin() as conn:  # a recorded run: its row counts are the next one's baseline
            runs.start_run(conn, "run_1", "pipeline", {})
        stages.process_pending(engine, settings, "run_1")
        with engine.begin() as conn:
            runs.finish_run(conn, "run_1", "succeeded", {})
            assert quality.previous_counts(conn)["leads"] == 4
        (sheets / "2.csv").write_text(SECOND, encoding="utf-8")  # 2 new leads, 1 joined
        land(engine, settings, "run_2")
        stages.process_pending(engine, settings, "run_2")
        assert seen == [True, True]
        assert_same_as_full(engine, settings)
    finally:
        engine.dispose()


@pytest.mark.usefixtures("by_key")
def test_a_changed_definition_rebuilds_that_mart_and_the_marts_reading_it(
    warehouse_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A release that changes one mart's SQL rebuilds that mart and those over it, not every
    mart; the others stay incremental, and the rows are those of a full refresh."""
    sheets, settings, engine = fair_warehouse(warehouse_url, tmp_path)
    seen: list[marts.MartRefresh] = []
    original = marts.refresh_marts

    def spy(conn: Connection, **kw: Any) -> marts.MartRefresh:
        seen.append(original(conn, **kw))
        return seen[-1]

    monkeypatch.setattr(marts, "refresh_marts", spy)

    def changed(mart: str, sheet: str, text_: str) -> marts.MartRefresh:
        with engine.begin() as conn:  # as a release with another definition finds the catalog
            catalog = marts.mart_tables(marts.schema_of(conn, None))[marts.CATALOG.name]
            conn.execute(update(catalog).where(catalog.c.mart == mart).values(definition="old"))
        (sheets / sheet).write_text(text_, encoding="utf-8")
        land(engine, settings, sheet)
        stages.process_pending(engine, settings, sheet)
        run = seen[-1]
        assert_same_as_full(engine, settings)  # a full refresh of its own, rolled back
        return run

    try:
        (sheets / "1.csv").write_text(FIRST, encoding="utf-8")
        land(engine, settings, "run_1")
        stages.process_pending(engine, settings, "run_1")
        assert seen[-1].full

        quality_only = changed(marts.SOURCE_QUALITY.name, "2.csv", SECOND)
        assert not quality_only.full
        # mart_lead_aging_summary is always rebuilt whole (FULL); nothing reads source quality
        assert quality_only.rebuilt == {marts.SOURCE_QUALITY.name, "mart_lead_aging_summary"}

        stages_changed = changed("mart_stage_transitions", "3.csv", BRIDGE)
        assert not stages_changed.full
        assert stages_changed.rebuilt == {
            "mart_stage_transitions",
            "mart_lead_dates",  # reads the stage transitions
            "mart_funnel_daily",  # and these read the lead dates, or the daily funnel
            "mart_funnel_weekly",
            "mart_funnel_monthly",
            "mart_source_quality",
            "mart_lead_touch_days",
            "mart_lead_aging_summary",
        }
        # the keys are widened through mart_contacts: a new definition of it rebuilds all
        assert changed(marts.CONTACTS.name, "4.csv", MORE).full
    finally:
        engine.dispose()


def test_every_mart_comes_after_the_marts_it_reads() -> None:
    """A mart rebuilt whole rebuilds the marts reading it, in one pass in this order."""
    order = [m.name for m in marts.MARTS]
    for m in marts.MARTS:
        assert all(
            order.index(r) < order.index(m.name) or r == marts.CATALOG.name
            for r in marts._READS[m.name]
        ), m.name


def _declared_indexes(conn: Connection) -> dict[str, set[tuple[str, tuple[str, ...], bool]]]:
    tables = marts.mart_tables(marts.schema_of(conn, None))
    return {
        m.name: {
            (str(ix.name), tuple(c.name for c in ix.columns), bool(ix.unique))
            for ix in tables[m.name].indexes
        }
        for m in marts.MARTS
        if m.refresh != marts.VIEW
    }


def _stored_indexes(conn: Connection) -> dict[str, set[tuple[str, tuple[str, ...], bool]]]:
    insp, schema = inspect(conn), marts.schema_of(conn, None)
    return {
        m.name: {
            (str(ix["name"]), tuple(str(c) for c in ix["column_names"]), bool(ix["unique"]))
            for ix in insp.get_indexes(m.name, schema=schema)
        }
        for m in marts.MARTS
        if m.refresh != marts.VIEW
    }


def test_a_mart_made_by_a_refresh_is_indexed_after_its_rows_and_a_stored_one_stays_readable(
    warehouse_url: str, tmp_path: Path
) -> None:
    """A mart the refresh makes (the first run, a new definition) is filled, then indexed: an
    index built over the rows at once, not kept up row by row. A stored mart rebuilt whole keeps
    its indexes and deletes its rows: a reader goes on reading the old rows until the commit,
    where dropping an index would lock it out."""
    sheets, settings, engine = fair_warehouse(warehouse_url, tmp_path)
    statements: list[str] = []

    def seen(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        statements.append(" ".join(statement.replace('"', "").split()))

    def at(prefix: str) -> list[int]:
        return [i for i, s in enumerate(statements) if s.startswith(prefix)]

    def deletes(table: str) -> list[int]:
        return [i for i, s in enumerate(statements) if s.split()[:3] == ["DELETE", "FROM", table]]

    # the marts the loop fills (the exchange factors and the catalog are written on their own)
    filled = [
        m.name
        for m in marts.MARTS
        if m.refresh != marts.VIEW and m not in (marts.FX_FACTORS, marts.CATALOG)
    ]
    event.listen(engine, "before_cursor_execute", seen)
    try:
        (sheets / "1.csv").write_text(FIRST, encoding="utf-8")
        land(engine, settings, "run_1")
        statements.clear()
        stages.process_pending(engine, settings, "run_1")
        with engine.connect() as conn:
            declared = _declared_indexes(conn)
            assert _stored_indexes(conn) == declared
        prefix = "marts." if engine.dialect.name == "postgresql" else ""
        for name in filled:
            (insert_at,) = at(f"INSERT INTO {name} (")
            for ix, _, unique in declared[name]:
                create = f"CREATE {'UNIQUE ' if unique else ''}INDEX {ix} ON {prefix}{name} "
                assert at(create) and min(at(create)) < insert_at < max(at(create)), ix
                assert len(at(f"DROP INDEX {prefix}{ix}")) == 1, ix
            assert not deletes(prefix + name)

        # a whole refresh of the stored marts: no index dropped, the rows deleted
        statements.clear()
        with engine.connect() as conn, conn.begin() as txn:
            assert stages.refresh_marts(conn, settings).full
            assert not at("DROP INDEX") and not [s for s in statements if " INDEX " in s]
            for name in filled:
                (delete_at,) = deletes(prefix + name)
                (insert_at,) = at(f"INSERT INTO {name} (")
                assert delete_at < insert_at
            if engine.dialect.name == "postgresql":
                with engine.connect() as reader:
                    reader.execute(text("SET lock_timeout = '2s'"))
                    held = "select count(*) from marts.mart_contacts"
                    assert reader.execute(text(held)).scalar_one() == 4
            txn.rollback()
        with engine.connect() as conn:
            assert _stored_indexes(conn) == declared
    finally:
        event.remove(engine, "before_cursor_execute", seen)
        engine.dispose()
