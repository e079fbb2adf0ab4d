"""Exchange-rate files parsed into rates: the ECB's eurofxref CSV layouts and plain `date,currency,rate`.

Pure: text in, rates and the rows that could not be read out. A rate is how many units of
`currency` one unit of the file's base currency buys on `day` (the ECB quotes against EUR).
"""

from __future__ import annotations

import csv
import io
import re
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal, InvalidOperation

_CURRENCY = re.compile(r"^[A-Z]{3}$")
# The ECB writes "N/A" (and sometimes nothing) where a currency had no fixing that day.
_NO_VALUE = {"", "N/A", "NA", "-"}


@dataclass(frozen=True)
class Rate:
    day: date
    currency: str
    rate: Decimal


@dataclass(frozen=True)
class BadRow:
    line: int
    reason: str


@dataclass(frozen=True)
class ParsedRates:
    layout: str  # "ecb" or "plain"
    rates: tuple[Rate, ...]
    bad: tuple[BadRow, ...]


def _day(text: str) -> date | None:
    text = text.strip()
    for fmt in ("%Y-%m-%d", "%d %B %Y"):  # the history file, then the daily one ("1 December 2026")
        try:
            return datetime.strptime(text, fmt).date()
        except ValueError:
            continue
    return None


def _rate(text: str) -> Decimal | None:
    try:
        value = Decimal(text.strip())
    except InvalidOperation:
        return None
    return value if value.is_finite() and value > 0 else None


def parse_rates(text: str, base: str) -> ParsedRates:
    """Rates of a file in either layout, told apart by the header; rows of the base are skipped."""
    rows = list(csv.reader(io.StringIO(text.lstrip("\ufeff"))))
    if not rows:
        return ParsedRates("plain", (), (BadRow(1, "empty file"),))
    header = [h.strip() for h in rows[0]]
    lowered = [h.lower() for h in header]
    if lowered[:3] == ["date", "currency", "rate"]:
        return _plain(rows[1:], base)
    if lowered and lowered[0] == "date":
        return _ecb(header, rows[1:], base)
    return ParsedRates(
        "plain", (), (BadRow(1, "header is neither `Date,USD,…` (ECB) nor `date,currency,rate`"),)
    )


def _ecb(header: list[str], rows: list[list[str]], base: str) -> ParsedRates:
    currencies = [(i, c) for i, c in enumerate(header) if i > 0 and _CURRENCY.match(c)]
    rates: list[Rate] = []
    bad: list[BadRow] = []
    for line, row in enumerate(rows, start=2):
        if not any(cell.strip() for cell in row):
            continue
        day = _day(row[0])
        if day is None:
            bad.append(BadRow(line, f"not a date: {row[0].strip()[:20]!r}"))
            continue
        for i, cur in currencies:
            cell = row[i].strip() if i < len(row) else ""
            if cell.upper() in _NO_VALUE or cur == base:
                continue
            value = _rate(cell)
            if value is None:
                bad.append(BadRow(line, f"{cur}: not a positive rate: {cell[:20]!r}"))
            else:
                rates.append(Rate(day, cur, value))
    return ParsedRates("ecb", tuple(rates), tuple(bad))


def _plain(rows: list[list[str]], base: str) -> ParsedRates:
    rates: list[Rate] = []
    bad: list[BadRow] = []
    for line, row in enumerate(rows, start=2):
        if not any(cell.strip() for cell in row):
            continue
        if len(row) < 3:
            bad.append(BadRow(line, "needs date, currency and rate"))
            continue
        day, cur, value = _day(row[0]), row[1].strip().upper(), _rate(row[2])
        if day is None:
            bad.append(BadRow(line, f"not a date: {row[0].strip()[:20]!r}"))
        elif not _CURRENCY.match(cur):
            bad.append(BadRow(line, f"not an ISO currency: {row[1].strip()[:20]!r}"))
        elif value is None:
            bad.append(BadRow(line, f"not a positive rate: {row[2].strip()[:20]!r}"))
        elif cur != base:
            rates.append(Rate(day, cur, value))
    return ParsedRates("plain", tuple(rates), tuple(bad))
