"""Rates files into fx_rates: loaded once per file version, then used by the marts' conversion."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

from sqlalchemy import func, select

from flows.settings import FxSettings, MartSettings, Settings, WarehouseSettings
from flows.stages import refresh_marts
from warehouse import db
from warehouse.schema import fx_rates, source_cursors


def test_rates_load_once_per_file_version_and_feed_the_marts(
    warehouse_url: str, tmp_path: Path
) -> None:
    rates = tmp_path / "eurofxref-hist.csv"
    rates.write_text("Date,USD,TRY,\n2026-03-10,1.25,N/A,\n2026-03-09,1.20,40,\n")
    plain = tmp_path / "extra.csv"
    plain.write_text("date,currency,rate\n2026-03-10,GBP,0.85\n2026-03-10,XX,1\n")
    settings = Settings(
        warehouse=WarehouseSettings(url=warehouse_url),
        marts=MartSettings(reporting_currency="USD"),
        fx=FxSettings(rates=[str(rates), str(plain)]),
    )
    engine = db.make_engine(warehouse_url)
    db.upgrade(engine)
    with engine.begin() as conn:
        first = refresh_marts(conn, settings, "run_1")
        assert conn.execute(select(func.count()).select_from(fx_rates)).scalar_one() == 4
        assert first.bad_rate_rows == ("extra.csv:3: not an ISO currency: 'XX'",)
        (check,) = first.checks()
        assert (check.suite, check.severity, check.unexpected_count) == ("fx_rates", "warning", 1)
    with engine.begin() as conn:
        again = refresh_marts(conn, settings, "run_2")
        # Unchanged files are not read again: their cursor still names the first run.
        runs = set(conn.execute(select(source_cursors.c.run_id)).scalars())
        assert again.bad_rate_rows == () and runs == {"run_1"}
    rates.write_text("Date,USD,TRY,\n2026-03-10,1.30,N/A,\n2026-03-09,1.20,40,\n")
    with engine.begin() as conn:
        refresh_marts(conn, settings, "run_3")
        usd = conn.execute(
            select(fx_rates.c.rate)
            .where(fx_rates.c.currency == "USD")
            .order_by(fx_rates.c.rate_date)
        ).scalars()
        assert [Decimal(str(r)).quantize(Decimal("0.01")) for r in usd] == [
            Decimal("1.20"),
            Decimal("1.30"),
        ]
    engine.dispose()
