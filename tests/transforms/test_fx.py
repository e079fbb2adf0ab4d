"""Rates files in both layouts: the ECB's eurofxref CSV (daily and history) and date,currency,rate."""

from __future__ import annotations

from datetime import date
from decimal import Decimal

import pytest

from transforms.fx import parse_rates

ECB_HISTORY = """Date,USD,JPY,TRY,CYP,EUR,
2026-03-10,1.0850,162.10,40.1234,N/A,1,
2026-03-09,1.0800,N/A,40.0000,N/A,1,
"""
# The daily file: spaces after each comma, the date spelled out.
ECB_DAILY = """Date, USD, JPY, TRY,
10 March 2026, 1.0850, 162.10, 40.1234,
"""
PLAIN = """date,currency,rate
2026-03-10,usd,1.085
2026-03-10,TRY,40.1234
2026-03-10,EUR,1
"""


@pytest.mark.parametrize(
    ("text", "layout", "count"),
    [(ECB_HISTORY, "ecb", 5), (ECB_DAILY, "ecb", 3), (PLAIN, "plain", 2)],
)
def test_layouts(text: str, layout: str, count: int) -> None:
    parsed = parse_rates(text, "EUR")
    assert parsed.layout == layout and parsed.bad == ()
    assert len(parsed.rates) == count
    usd = [r for r in parsed.rates if r.currency == "USD" and r.day == date(2026, 3, 10)]
    assert [r.rate for r in usd] == [Decimal("1.0850")] or [r.rate for r in usd] == [
        Decimal("1.085")
    ]
    assert all(r.currency != "EUR" for r in parsed.rates)  # the base is 1 by definition


def test_bad_rows_are_reported_with_their_line() -> None:
    text = "date,currency,rate\n2026-13-01,USD,1.1\n2026-03-01,DOLLAR,1.1\n2026-03-01,USD,-2\n"
    parsed = parse_rates(text, "EUR")
    assert parsed.rates == ()
    assert [(b.line, b.reason.split(":")[0]) for b in parsed.bad] == [
        (2, "not a date"),
        (3, "not an ISO currency"),
        (4, "not a positive rate"),
    ]
    ecb = parse_rates("Date,USD,\nyesterday,1.1,\n2026-03-01,abc,\n", "EUR")
    assert [b.line for b in ecb.bad] == [2, 3] and ecb.rates == ()
    assert parse_rates("when,what\n", "EUR").bad[0].line == 1
