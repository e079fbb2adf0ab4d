"""Spreadsheet sources: CSV and XLSX files, read row by row into raw records keyed by header."""

from __future__ import annotations

import csv
import io
import os
from collections import Counter
from collections.abc import Iterator
from datetime import date, datetime, time
from typing import Any

from connectors.base import (
    ExtractReject,
    RawBatch,
    RawRecord,
    content_hash,
    expand_paths,
    file_mtime,
    iter_changed_files,
)

SUFFIXES = (".csv", ".tsv", ".txt", ".xlsx", ".xlsm")
ENCODINGS = ("utf-8", "cp1254", "cp1252")


def decode_text(data: bytes) -> str:
    """Decode by BOM first, then the encodings contact exports in our markets really use."""
    if data.startswith(b"\xef\xbb\xbf"):
        return data[3:].decode("utf-8", "replace")
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        return data.decode("utf-16", "replace")
    for enc in ENCODINGS:
        try:
            return data.decode(enc)
        except UnicodeDecodeError:
            continue
    return data.decode("latin-1")


def sniff_delimiter(text: str) -> str:
    sample = "\n".join(text.splitlines()[:20])
    try:
        return csv.Sniffer().sniff(sample, delimiters=",;\t|").delimiter
    except csv.Error:
        counts = {d: sample.count(d) for d in ",;\t|"}
        return max(counts, key=lambda d: counts[d]) if any(counts.values()) else ","


def _cell(value: Any) -> Any:
    if isinstance(value, datetime | date | time):
        return value.isoformat()
    if isinstance(value, str):
        return value.replace("\x00", "")
    return value


def _csv_rows(path: str) -> Iterator[list[str]]:
    with open(path, "rb") as fh:
        text = decode_text(fh.read()).replace("\x00", "")
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    yield from csv.reader(io.StringIO(text), delimiter=sniff_delimiter(text))


def _xlsx_sheets(path: str, sheets: list[str] | None) -> list[tuple[str, list[list[Any]]]]:
    from openpyxl import load_workbook

    wb = load_workbook(path, read_only=True, data_only=True)
    try:
        return [
            (ws.title, [[_cell(v) for v in row] for row in ws.iter_rows(values_only=True)])
            for ws in wb.worksheets
            if not sheets or ws.title in sheets
        ]
    finally:
        wb.close()


def _is_header(row: list[Any]) -> bool:
    texts = [c for c in row if isinstance(c, str) and c.strip()]
    return len(texts) >= 2 and len(texts) == len([c for c in row if c not in (None, "")])


def _records_from_rows(
    source: str, fname: str, sheet: str, rows: Any, received_at: datetime
) -> tuple[list[RawRecord], list[ExtractReject]]:
    header: list[str] | None = None
    records: list[RawRecord] = []
    rejects: list[ExtractReject] = []
    seen: Counter[str] = Counter()
    for lineno, row in enumerate(rows, start=1):
        if not any(c not in (None, "") for c in row):
            continue
        if header is None:
            if _is_header(row):
                header = [str(c).strip() if c is not None else "" for c in row]
            continue
        cells = list(row)
        while len(cells) > len(header) and cells[-1] in (None, ""):
            cells.pop()
        if len(cells) > len(header):
            rid = f"{fname}:{sheet}:line{lineno}"
            msg = f"row has {len(cells)} cells, the header has {len(header)}"
            rejects.append(ExtractReject(source, rid, "ragged_row", msg, repr(row)[:2000]))
            continue
        cells += [None] * (len(header) - len(cells))
        payload = {
            h or f"column_{i + 1}": _cell(v)
            for i, (h, v) in enumerate(zip(header, cells, strict=True))
        }
        key = content_hash(repr(sorted(payload.items(), key=lambda kv: kv[0])))[:16]
        seen[key] += 1
        rid = f"{fname}:{sheet}:{key}" + (f"#{seen[key]}" if seen[key] > 1 else "")
        records.append(RawRecord(source, "spreadsheet", rid, received_at, payload))
    return records, rejects


def iter_spreadsheet(
    source: str, path: str, cursor: dict[str, Any] | None, sheets: list[str] | None = None
) -> Iterator[RawBatch]:
    """Yield one batch per changed file (one per sheet for workbooks); unchanged files are skipped."""
    for fpath, _fp, after in iter_changed_files(expand_paths(path, SUFFIXES), cursor):
        fname = os.path.basename(fpath)
        received_at = file_mtime(fpath)
        if fpath.lower().endswith((".xlsx", ".xlsm")):
            parts: list[tuple[str, Any]] = _xlsx_sheets(fpath, sheets)
        else:
            parts = [("csv", _csv_rows(fpath))]
        records: list[RawRecord] = []
        rejects: list[ExtractReject] = []
        for sheet, rows in parts:
            recs, rejs = _records_from_rows(source, fname, sheet, rows, received_at)
            records += recs
            rejects += rejs
        yield RawBatch(records=records, cursor=after, rejects=rejects)
