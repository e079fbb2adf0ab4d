"""CRM updates move opportunities with history, close them won or lost, and the marts follow."""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from pathlib import Path

from sqlalchemy import select, text

from flows.settings import OpportunityUpdatesSource, Settings, WarehouseSettings
from flows.stages import apply_opportunity_updates, refresh_marts
from tests.warehouse.test_mart_numbers import fill, rows
from warehouse import db
from warehouse import schema as t

UPDATES = """opportunity_id,email,stage,amount,currency,close_date,outcome,changed_at
,Ayse@Fair.example,,22000,TRY,2026-03-09,won,2026-03-09T12:00:00Z
O9,,,,,,lost,
,nobody@x.example,Negotiation/Review,,,,,
O1,,Closed Won,,,,,2026-03-05T06:00:00Z
O4,,Moonshot,,,,,
"""


def test_updates_close_opportunities_and_win_rates_follow(
    warehouse_url: str, tmp_path: Path
) -> None:
    exports = tmp_path / "crm"
    exports.mkdir()
    (exports / "2026-03-10.csv").write_text(UPDATES)
    settings = Settings(
        warehouse=WarehouseSettings(url=warehouse_url),
        opportunity_updates=[OpportunityUpdatesSource(name="crm", path=str(exports / "*.csv"))],
    )
    engine = db.make_engine(warehouse_url)
    db.upgrade(engine)
    with engine.begin() as conn:
        fill(conn)
        conn.execute(
            t.contacts.update()
            .where(t.contacts.c.contact_id == "c4")
            .values(email_key="ayse@fair.example")
        )
        refresh_marts(conn, settings)
    assert {r["lead_source"]: r["win_rate"] for r in rows(engine, "mart_outcomes_by_source")} == {
        "fair": None,
        "web": Decimal("0.7500"),
    }
    with engine.begin() as conn:
        stats = apply_opportunity_updates(conn, settings, "run_crm")
        refresh_marts(conn, settings)
    assert stats == {
        "opportunity_updates_read": 5,
        "opportunity_updates_applied": 2,
        "opportunity_updates_rejected": 3,
        "opportunity_stage_moves": 1,
    }
    with engine.connect() as conn:
        o3 = conn.execute(
            select(t.opportunities).where(t.opportunities.c.opportunity_id == "O3")
        ).one()
        moves = conn.execute(
            select(t.opportunity_stage_history.c.from_stage, t.opportunity_stage_history.c.to_stage,
                   t.opportunity_stage_history.c.rules_version)
            .where(t.opportunity_stage_history.c.opportunity_id == "O3")
            .order_by(t.opportunity_stage_history.c.changed_at)
        ).all()  # fmt: skip
        rejected: dict[str, str] = dict(
            conn.execute(
                text("select source_record_id, code from rejects where stage = 'outcome'")
            ).all()
        )
    # Matched by the lead's email; the catalogue's probability comes with the stage.
    assert (o3.stage, o3.probability, o3.close_date) == ("Closed Won", 100, date(2026, 3, 9))
    assert Decimal(str(o3.amount)) == Decimal("22000")
    assert moves[-1] == ("Proposal/Price Quote", "Closed Won", "crm:crm")
    assert rejected == {
        "2026-03-10.csv:3": "unmatched_opportunity",
        "2026-03-10.csv:4": "unmatched_opportunity",
        "2026-03-10.csv:6": "unknown_stage",
    }
    fair = {r["lead_source"]: r for r in rows(engine, "mart_outcomes_by_source")}["fair"]
    # Created 02-27 06:00, closed 03-09 12:00; 22000 TRY at 40 per EUR.
    assert (fair["won"], fair["win_rate"]) == (1, Decimal("1.0000"))
    assert fair["median_sales_cycle_days"] == Decimal("10.25")
    assert fair["won_amount"] == Decimal("550.00")
    stage_rows = [r for r in rows(engine, "mart_stage_transitions") if r["opportunity_id"] == "O3"]
    assert [r["to_stage"] for r in sorted(stage_rows, key=lambda r: r["changed_at"])][
        -1
    ] == "Closed Won"

    # Idempotent: the same file is not applied again; the same rows in a new file change nothing.
    with engine.begin() as conn:
        assert apply_opportunity_updates(conn, settings, "run_again") == {}
    (exports / "2026-03-11.csv").write_text(UPDATES)
    with engine.begin() as conn:
        again = apply_opportunity_updates(conn, settings, "run_again")
        history = conn.execute(text("select count(*) from opportunity_stage_history")).scalar_one()
    assert again["opportunity_stage_moves"] == 0 and history == 11
    engine.dispose()
