"""Each mart's numbers against a small warehouse computed by hand, on SQLite and PostgreSQL.

Six leads from two sources over three ISO weeks and two months; five opportunities (three won,
one lost, one open) in EUR, USD and TRY. Times fall on quarter days, so every "days" figure is
exact to two decimals. The data's clock is the newest contact: 2026-03-10 12:00 UTC.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import Connection, Engine, inspect, select, types

from tests.conftest import pg_database
from warehouse import db, marts, resolution
from warehouse import schema as t

CLOCK = datetime(2026, 3, 10, 12, tzinfo=UTC)


def at(day: str, hour: int = 0) -> datetime:
    return datetime.fromisoformat(day).replace(hour=hour, tzinfo=UTC)


# lead: source, first seen, last seen, status, converted (its opportunity's created_at)
LEADS = {
    "L1": ("web", at("2026-03-02", 6), at("2026-03-02", 6), "Qualified", True),
    "L2": ("web", at("2026-03-03", 12), at("2026-03-03", 18), "Qualified", True),
    "L3": ("fair", at("2026-02-27", 6), at("2026-02-27", 6), "Qualified", True),
    "L4": ("web", at("2026-03-10", 12), at("2026-03-10", 12), "Nurturing", False),
    "L5": ("web", at("2026-03-04", 12), at("2026-03-04", 12), "Qualified", True),
    "L6": ("web", at("2026-03-05", 0), at("2026-03-05", 0), "Qualified", True),
}
# contact: source, received, lead
CONTACTS = {
    "c1": ("web", at("2026-03-02", 6), "L1"),
    "c2": ("web", at("2026-03-03", 12), "L2"),
    "c3": ("fair", at("2026-03-03", 18), "L2"),
    "c4": ("fair", at("2026-02-27", 6), "L3"),
    "c5": ("web", at("2026-03-10", 12), "L4"),
    "c6": ("web", at("2026-03-04", 12), "L5"),
    "c7": ("web", at("2026-03-05", 0), "L6"),
}
# opportunity: lead, stage now, probability, amount, currency, close date, stage moves after the first
OPPS = {
    "O1": ("L1", "Closed Won", 100, "1000", "EUR", "2026-03-05", [("Closed Won", at("2026-03-05", 6))]),
    "O2": ("L2", "Closed Lost", 0, "500", "USD", "2026-03-06", [("Closed Lost", at("2026-03-06", 18))]),
    "O3": ("L3", "Proposal/Price Quote", 75, "20000", "TRY", "2026-04-15", [("Proposal/Price Quote", at("2026-03-01", 6))]),
    "O4": ("L5", "Closed Won", 100, "2000", "USD", "2026-03-09", [("Closed Won", at("2026-03-09", 12))]),
    "O5": ("L6", "Closed Won", 100, "300", "EUR", "2026-03-10", [("Closed Won", at("2026-03-10", 12))]),
}  # fmt: skip
# status history: lead, from, to, at
STATUSES = [
    ("L1", None, "Qualified", at("2026-03-02", 6)),
    ("L2", None, "Nurturing", at("2026-03-03", 12)),
    ("L2", "Nurturing", "Qualified", at("2026-03-03", 18)),
    ("L3", None, "Qualified", at("2026-02-27", 6)),
    ("L4", None, "Nurturing", at("2026-03-10", 12)),
    ("L5", None, "Qualified", at("2026-03-04", 12)),
    ("L6", None, "Qualified", at("2026-03-05", 0)),
]
RATES = [  # one EUR in…
    (date(2026, 3, 9), "USD", "1.25"),
    (date(2026, 3, 2), "USD", "1.10"),  # older: the latest on or before the clock's day wins
    (date(2026, 3, 10), "TRY", "40"),
    (date(2026, 3, 11), "TRY", "80"),  # after the clock: not used
]


def fill(conn: Connection) -> None:
    conn.execute(
        t.contacts.insert(),
        [
            {
                "contact_id": cid,
                "raw_id": f"raw_{cid}",
                "source": src,
                "source_kind": "spreadsheet",
                "received_at": ts,
                "issues": [],
                "email_is_role": False,
                "email_is_free": False,
                "email_is_disposable": False,
            }
            for cid, (src, ts, _) in CONTACTS.items()
        ],
    )
    conn.execute(
        t.lead_links.insert(),
        [
            {"contact_id": c, "lead_id": lead, "rule": "hand", "score": 1.0, "evidence": {}}
            for c, (_, _, lead) in CONTACTS.items()
        ],
    )
    opp_of = {v[0]: k for k, v in OPPS.items()}
    conn.execute(
        t.leads.insert(),
        [
            {
                "lead_id": lid,
                "company": "Acme",
                "lead_source": src,
                "first_seen_at": first,
                "last_seen_at": last,
                "contact_count": 1,
                "source_count": 1,
                "survivorship": {},
                "status": status,
                "score": 80,
                "grade": "A",
                "reasons": [],
                "rules_version": "r1",
                "converted_at": last if conv else None,
                "account_id": f"acc_{lid}" if conv else None,
                "opportunity_id": opp_of.get(lid),
            }
            for lid, (src, first, last, status, conv) in LEADS.items()
        ],
    )
    conn.execute(
        t.opportunities.insert(),
        [
            {
                "opportunity_id": oid,
                "lead_id": lid,
                "account_id": f"acc_{lid}",
                "name": f"Acme {oid}",
                "primary_contact_id": "c1",
                "lead_source": LEADS[lid][0],
                "stage": stage,
                "probability": prob,
                "amount": Decimal(amount),
                "currency": cur,
                "close_date": date.fromisoformat(close),
                "created_at": LEADS[lid][2],
            }
            for oid, (lid, stage, prob, amount, cur, close, _) in OPPS.items()
        ],
    )
    history = []
    for oid, (lid, _, _, _, _, _, moves) in OPPS.items():
        prev, when = None, LEADS[lid][2]
        for to, ts in [("Prospecting", when), *moves]:
            history.append(
                {
                    "history_id": f"h_{oid}_{to}",
                    "opportunity_id": oid,
                    "lead_id": lid,
                    "from_stage": prev,
                    "to_stage": to,
                    "changed_at": ts,
                    "reason": "hand",
                    "rules_version": "r1",
                }
            )
            prev = to
    conn.execute(t.opportunity_stage_history.insert(), history)
    conn.execute(
        t.lead_status_history.insert(),
        [
            {
                "history_id": f"s_{lid}_{i}",
                "lead_id": lid,
                "from_status": a,
                "to_status": b,
                "changed_at": ts,
                "score": 80,
                "reason": "hand",
                "rules_version": "r1",
            }
            for i, (lid, a, b, ts) in enumerate(STATUSES)
        ],
    )
    conn.execute(
        t.fx_rates.insert(),
        [{"rate_date": d, "currency": c, "rate": Decimal(r)} for d, c, r in RATES],
    )


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def hand(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Engine]:
    """The hand-computed warehouse with its marts refreshed once."""

    def build(url: str) -> Engine:
        engine = db.make_engine(url)
        db.upgrade(engine)
        with engine.begin() as conn:
            fill(conn)
            assert resolution.data_clock(conn) == CLOCK
            refresh = marts.refresh_marts(conn, as_of=CLOCK)
        assert refresh.missing_rates == ()
        return engine

    if request.param == "sqlite":
        engine = build(f"sqlite:///{tmp_path_factory.mktemp('marts') / 'hand.db'}")
        yield engine
        engine.dispose()
    else:
        with pg_database() as url:
            engine = build(url)
            yield engine
            engine.dispose()


def rows(engine: Engine, mart: str, order: str | None = None) -> list[dict[str, Any]]:
    with engine.connect() as conn:
        table = marts.mart_tables(marts.schema_of(conn, None))[mart]
        q = select(table)
        keys = [c for m in marts.MARTS if m.name == mart for c in m.key]
        q = q.order_by(*(table.c[k] for k in ([order] if order else keys)))
        return [dict(r._mapping) for r in conn.execute(q)]


def by(engine: Engine, mart: str, *key: str) -> dict[Any, dict[str, Any]]:
    out = {}
    for r in rows(engine, mart):
        out[tuple(r[k] for k in key) if len(key) > 1 else r[key[0]]] = r
    return out


def D(s: str) -> Decimal:  # noqa: N802 - reads as a literal
    return Decimal(s)


def test_types_are_as_declared(hand: Engine) -> None:
    with hand.connect() as conn:
        schema = marts.schema_of(conn, None)
        insp = inspect(conn)
        for m in marts.MARTS:
            got: dict[str, Any] = {
                c["name"]: c["type"] for c in insp.get_columns(m.name, schema=schema)
            }
            assert list(got) == [c.name for c in m.columns], m.name
            for col in m.columns:
                want = type(col.type)
                have = got[col.name]
                if want is types.Boolean and hand.dialect.name == "sqlite":
                    assert isinstance(have, types.Boolean | types.Integer), (m.name, col.name)
                    continue
                if m.refresh == marts.VIEW and hand.dialect.name == "sqlite":
                    # SQLite declares no type for a view's computed column; PostgreSQL does
                    assert isinstance(have, want | types.NullType), (m.name, col.name, have)
                    continue
                assert isinstance(have, want), (m.name, col.name, have)
                if isinstance(col.type, types.Numeric) and isinstance(have, types.Numeric):
                    assert (have.precision, have.scale) == (col.type.precision, col.type.scale)
                if isinstance(have, types.DateTime) and hand.dialect.name == "postgresql":
                    assert have.timezone, (m.name, col.name)
    if hand.dialect.name == "postgresql":
        with hand.connect() as conn:
            kinds = conn.exec_driver_sql(
                "select data_type, count(*) from information_schema.columns "
                "where table_schema = 'marts' and column_name in ('day', 'as_of', 'win_rate') "
                "group by data_type order by 1"
            ).all()
        assert kinds == [("date", 1), ("numeric", 2), ("timestamp with time zone", 2)]


def test_funnel_by_week_and_month(hand: Engine) -> None:
    weeks = by(hand, "mart_funnel_weekly", "week_start", "source")
    assert sorted(weeks) == [
        (date(2026, 2, 23), "fair"),
        (date(2026, 3, 2), "fair"),
        (date(2026, 3, 2), "web"),
        (date(2026, 3, 9), "web"),
    ]
    w = weeks[(date(2026, 3, 2), "web")]
    assert (w["contacts"], w["new_leads"], w["qualified"], w["opportunities"]) == (4, 4, 4, 4)
    assert weeks[(date(2026, 3, 2), "fair")]["new_leads"] == 0
    assert weeks[(date(2026, 3, 2), "fair")]["qualification_rate"] is None
    assert weeks[(date(2026, 3, 9), "web")]["conversion_rate"] == D("0.0000")
    months = by(hand, "mart_funnel_monthly", "month_start", "source")
    m = months[(date(2026, 3, 1), "web")]
    assert (m["contacts"], m["new_leads"], m["qualified"], m["opportunities"]) == (5, 5, 4, 4)
    assert (m["lead_rate"], m["qualification_rate"]) == (D("1.0000"), D("0.8000"))
    assert months[(date(2026, 3, 1), "fair")]["lead_rate"] == D("0.0000")
    assert months[(date(2026, 2, 1), "fair")]["opportunities"] == 1
    daily = by(hand, "mart_funnel_daily", "day", "source")
    assert daily[(date(2026, 3, 3), "fair")]["contacts"] == 1
    assert sum(r["contacts"] for r in daily.values()) == len(CONTACTS)


def test_lead_aging_against_the_data_clock(hand: Engine) -> None:
    aging = by(hand, "mart_lead_aging", "lead_id")
    l2 = aging["L2"]
    assert _utc(l2["as_of"]) == CLOCK
    assert l2["days_since_first_seen"] == D("7.00")
    assert l2["days_to_qualified"] == D("0.25")
    assert l2["days_to_opportunity"] == D("0.25")
    # The last touch is the opportunity's close (03-06 18:00), later than the last contact.
    assert _utc(l2["last_touch_at"]) == at("2026-03-06", 18)
    assert l2["days_since_last_touch"] == D("3.75")
    assert l2["status_age_days"] == D("6.75")
    l3 = aging["L3"]  # February has 28 days in 2026
    assert (l3["days_since_first_seen"], l3["days_since_last_touch"]) == (D("11.25"), D("9.25"))
    l4 = aging["L4"]
    assert l4["qualified_at"] is None and l4["days_to_qualified"] is None
    assert l4["days_to_opportunity"] is None
    assert (l4["days_since_first_seen"], l4["status_age_days"]) == (D("0.00"), D("0.00"))


def test_status_and_stage_transitions(hand: Engine) -> None:
    st = rows(hand, "mart_status_transitions")
    assert len(st) == len(STATUSES)
    l2 = [r for r in st if r["lead_id"] == "L2" and r["from_status"] == "Nurturing"]
    assert [(r["to_status"], r["changed_on"], r["rules_version"]) for r in l2] == [
        ("Qualified", date(2026, 3, 3), "r1")
    ]
    sg = rows(hand, "mart_stage_transitions")
    assert len(sg) == 10
    o3 = sorted(
        (r["changed_on"], r["from_stage"], r["to_stage"]) for r in sg if r["opportunity_id"] == "O3"
    )
    assert o3 == [
        (date(2026, 2, 27), None, "Prospecting"),
        (date(2026, 3, 1), "Prospecting", "Proposal/Price Quote"),
    ]


def test_opportunities_in_the_reporting_currency(hand: Engine) -> None:
    opps = by(hand, "mart_opportunities", "opportunity_id")
    # USD at the 03-09 rate (1.25 per EUR), TRY at 03-10 (40), never the later 03-11 one.
    assert {k: v["amount_reporting"] for k, v in opps.items()} == {
        "O1": D("1000.00"),
        "O2": D("400.00"),
        "O3": D("500.00"),
        "O4": D("1600.00"),
        "O5": D("300.00"),
    }
    assert opps["O5"]["sales_cycle_days"] == D("5.50")
    assert opps["O3"]["sales_cycle_days"] is None and opps["O3"]["closed_at"] is None
    assert opps["O3"]["close_month"] == date(2026, 4, 1)
    assert opps["O1"]["is_won"] and opps["O2"]["is_closed"] and not opps["O2"]["is_won"]
    pipe = rows(hand, "mart_pipeline")
    assert [
        (r["stage"], r["currency"], r["opportunities"], r["amount"], r["weighted_amount"],
         r["amount_reporting"], r["weighted_amount_reporting"])
        for r in pipe
    ] == [("Proposal/Price Quote", "TRY", 1, D("20000.00"), D("15000.00"), D("500.00"), D("375.00"))]  # fmt: skip


def test_win_rates_and_sales_cycles(hand: Engine) -> None:
    src = by(hand, "mart_outcomes_by_source", "lead_source")
    web = src["web"]
    assert (web["opportunities"], web["open"], web["won"], web["lost"]) == (4, 0, 3, 1)
    assert web["win_rate"] == D("0.7500")
    # Won cycles 3, 5 and 5.5 days: the mean and the median differ.
    assert (web["avg_sales_cycle_days"], web["median_sales_cycle_days"]) == (D("4.50"), D("5.00"))
    assert web["won_amount"] == D("2900.00") and web["reporting_currency"] == "EUR"
    fair = src["fair"]
    assert (fair["open"], fair["win_rate"], fair["won_amount"]) == (1, None, None)
    month = by(hand, "mart_outcomes_by_month", "created_month")
    assert month[date(2026, 3, 1)]["win_rate"] == D("0.7500")
    assert month[date(2026, 2, 1)]["opportunities"] == 1


def test_forecast_by_close_month_and_category(hand: Engine) -> None:
    fc = by(hand, "mart_forecast", "close_month", "forecast_category")
    assert {k: (v["opportunities"], v["amount"], v["weighted_amount"]) for k, v in fc.items()} == {
        (date(2026, 3, 1), "Closed"): (3, D("2900.00"), D("2900.00")),
        (date(2026, 3, 1), "Omitted"): (1, D("400.00"), D("0.00")),
        (date(2026, 4, 1), "Pipeline"): (1, D("500.00"), D("375.00")),
    }
    assert all(v["unconverted_opportunities"] == 0 for v in fc.values())


def test_catalog_lists_every_mart(hand: Engine) -> None:
    cat = by(hand, "mart_catalog", "mart")
    assert sorted(cat) == sorted(m.name for m in marts.MARTS)
    assert cat["mart_lead_aging"]["row_count"] == len(LEADS)
    assert _utc(cat["mart_lead_aging"]["as_of"]) == CLOCK


def test_a_missing_rate_is_a_named_warning_not_a_silent_null(hand: Engine) -> None:
    with hand.connect() as conn, conn.begin() as txn:
        conn.execute(t.fx_rates.delete().where(t.fx_rates.c.currency == "TRY"))
        refresh = marts.refresh_marts(conn, as_of=CLOCK)
        assert [(m.currency, m.on, m.opportunities) for m in refresh.missing_rates] == [
            ("TRY", date(2026, 3, 10), 1)
        ]
        (check,) = refresh.checks()
        assert (check.severity, check.success, check.column) == ("warning", False, "TRY")
        assert check.sample_ids == ["TRY 2026-03-10"]
        assert "TRY on 2026-03-10" in refresh.warnings()[0]
        schema = marts.schema_of(conn, None)
        tables = marts.mart_tables(schema)
        fc = tables["mart_forecast"]
        row = conn.execute(
            select(fc.c.amount, fc.c.unconverted_opportunities).where(
                fc.c.close_month == date(2026, 4, 1)
            )
        ).one()
        assert (row.amount, row.unconverted_opportunities) == (None, 1)
        pipe = tables["mart_pipeline"]
        assert conn.execute(select(pipe.c.amount_reporting)).scalar_one() is None
        txn.rollback()
    # A rate older than a week before the clock's day does not count either.
    with hand.connect() as conn, conn.begin() as txn:
        late = datetime(2026, 3, 17, 12, tzinfo=UTC)
        refresh = marts.refresh_marts(conn, as_of=late)
        assert {m.currency for m in refresh.missing_rates} == {"USD"}
        txn.rollback()


def _utc(ts: datetime) -> datetime:
    return ts.replace(tzinfo=UTC) if ts.tzinfo is None else ts.astimezone(UTC)


def test_aging_summary(hand: Engine) -> None:
    summary = by(hand, "mart_lead_aging_summary", "lead_source", "status")
    web = summary[("web", "Qualified")]
    # L1 8.25, L2 7.00, L5 6.00, L6 5.50 days since first seen
    assert (web["leads"], web["avg_days_since_first_seen"]) == (4, D("6.69"))
    assert (web["untouched_30_days"], web["untouched_90_days"]) == (0, 0)
    assert summary[("web", "Nurturing")]["avg_days_to_qualified"] is None


def test_history_marts_refresh_incrementally(hand: Engine) -> None:
    with hand.connect() as conn, conn.begin() as txn:
        h = t.lead_status_history
        conn.execute(h.delete().where(h.c.history_id == "s_L4_4"))
        conn.execute(
            h.insert().values(
                history_id="s_L4_new",
                lead_id="L4",
                from_status="Nurturing",
                to_status="Qualified",
                changed_at=CLOCK,
                score=90,
                reason="hand",
                rules_version="r2",
            )
        )
        refresh = marts.refresh_marts(conn, as_of=CLOCK)
        assert refresh.rows["mart_status_transitions"] == len(STATUSES)
        table = marts.mart_tables(marts.schema_of(conn, None))["mart_status_transitions"]
        ids = set(conn.execute(select(table.c.history_id)).scalars())
        assert "s_L4_new" in ids and "s_L4_4" not in ids
        txn.rollback()


def test_a_reporting_currency_other_than_the_base(hand: Engine) -> None:
    with hand.connect() as conn, conn.begin() as txn:
        refresh = marts.refresh_marts(conn, as_of=CLOCK, reporting_currency="USD")
        assert refresh.missing_rates == ()
        table = marts.mart_tables(marts.schema_of(conn, None))["mart_opportunities"]
        got = dict(conn.execute(select(table.c.opportunity_id, table.c.amount_reporting)).all())
        # EUR × 1.25; USD as it is; TRY ÷ 40 × 1.25.
        assert got == {
            "O1": D("1250.00"),
            "O2": D("500.00"),
            "O3": D("625.00"),
            "O4": D("2000.00"),
            "O5": D("375.00"),
        }
        txn.rollback()


def test_a_missing_reporting_currency_rate_names_that_currency(hand: Engine) -> None:
    """Without a GBP rate nothing converts to GBP: the warning names GBP, not every amount's."""
    with hand.connect() as conn, conn.begin() as txn:
        refresh = marts.refresh_marts(conn, as_of=CLOCK, reporting_currency="GBP")
        assert [(m.currency, m.on, m.opportunities) for m in refresh.missing_rates] == [
            ("GBP", date(2026, 3, 10), len(OPPS))
        ]
        assert "GBP on 2026-03-10" in refresh.warnings()[0]
        txn.rollback()


def test_status_changes_by_day(hand: Engine) -> None:
    daily = rows(hand, "mart_status_changes_daily", "changed_on")
    got = sorted(
        (r["changed_on"], r["from_status"] or "", r["to_status"], r["changes"]) for r in daily
    )
    # Two changes of L2 on 03-03; one first status a day on the other days.
    assert got == [
        (date(2026, 2, 27), "", "Qualified", 1),
        (date(2026, 3, 2), "", "Qualified", 1),
        (date(2026, 3, 3), "", "Nurturing", 1),
        (date(2026, 3, 3), "Nurturing", "Qualified", 1),
        (date(2026, 3, 4), "", "Qualified", 1),
        (date(2026, 3, 5), "", "Qualified", 1),
        (date(2026, 3, 10), "", "Nurturing", 1),
    ]
    # Two leads making the same change on the same day are one row of two changes.
    with hand.connect() as conn, conn.begin() as txn:
        h = t.lead_status_history
        conn.execute(
            h.insert(),
            [
                {
                    "history_id": f"s_{lead}_again",
                    "lead_id": lead,
                    "from_status": "Qualified",
                    "to_status": "Nurturing",
                    "changed_at": at("2026-03-10", hour),
                    "score": 60,
                    "reason": "hand",
                    "rules_version": "r1",
                }
                for lead, hour in (("L1", 6), ("L5", 18))
            ],
        )
        marts.refresh_marts(conn, as_of=CLOCK)
        table = marts.mart_tables(marts.schema_of(conn, None))["mart_status_changes_daily"]
        on_10th = conn.execute(
            select(table.c.from_status, table.c.changes).where(
                table.c.changed_on == date(2026, 3, 10)
            )
        ).all()
        assert {tuple(r) for r in on_10th} == {(None, 1), ("Qualified", 2)}
        txn.rollback()
