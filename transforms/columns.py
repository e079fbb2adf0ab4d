"""Which field each column of a table maps to, and which columns hold contact data but map to none.

Pure: a table's header and first rows in, column mappings and typed warnings out. What a header
means comes from `transforms.fields` (the source's `columns:` map first, then the aliases), so
this module learns every alias that table learns. What a column's values look like (emails,
phones, web addresses, countries) is judged here, on the sample rows the connector kept.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from connectors.base import SAMPLE_ROWS, SourceWarning, TableShape
from transforms.fields import (
    CANONICAL,
    IGNORE,
    canonical_field,
    flatten_submission,
    header_key,
    header_plan,
)
from transforms.normalize import normalize_country, parse_consent

SAMPLES_SHOWN = 5
# a column is taken to hold a kind of value when this share of its non-empty samples has it
KIND_SHARE = 0.6

_EMAIL = re.compile(r"^(mailto:)?[^@\s<>\"',;]+@[^@\s<>\"',;]+\.[A-Za-z]{2,}$")
_URL = re.compile(
    r"^(https?://\S+|www\.[\w-]+(\.[\w-]+)+\S*|[\w-]+(\.[\w-]+)*\.(com|net|org|de|tr|fr|es|it|"
    r"nl|at|ch|co|io|uk|eu|info|biz)(/\S*)?)$",
    re.I,
)
_PHONE_CHARS = re.compile(r"^[+(]?[\d ()./-]{6,}(\s*(ext\.?|x|#)\s*\d{1,6})?$", re.I)
_NOT_PHONE = re.compile(
    r"^\d{1,4}[./-]\d{1,2}[./-]\d{1,4}$|^\d{1,3}([.,]\d{3})+$"
)  # dates, amounts
# fields worth a warning when a column that maps to nothing seems to hold them
_KINDS = ("email", "phone", "website", "country")


def value_kind(value: Any) -> str | None:
    """email, phone, website or country when a single value plainly is one, else None."""
    if value is None or isinstance(value, bool):
        return None
    text = str(value).strip()
    if not text or len(text) > 254:
        return None
    if "@" in text:
        return "email" if _EMAIL.match(text) else None
    if _URL.match(text):
        return "website"
    if _PHONE_CHARS.match(text):
        digits = sum(ch.isdigit() for ch in text)
        grouped = text.startswith(("+", "0", "(")) or re.search(r"\d[ ./-]+\d", text)
        if 7 <= digits <= 15 and grouped and not _NOT_PHONE.match(text):
            return "phone"
        return None
    if any(ch.isdigit() for ch in text) or len(text) > 40:
        return None
    # a two-letter code counts only in capitals: "de" or "ok" in a notes column is no country
    if len(text) == 2 and not text.isupper() or parse_consent(text) is not None:
        return None
    return "country" if normalize_country(text) else None


def kind_of_values(values: Iterable[Any]) -> str | None:
    """The kind most of a column's non-empty values have, when at least KIND_SHARE of them do."""
    texts = [v for v in values if v is not None and str(v).strip()]
    if not texts:
        return None
    counts: dict[str, int] = {}
    for v in texts:
        kind = value_kind(v)
        if kind:
            counts[kind] = counts.get(kind, 0) + 1
    if not counts:
        return None
    kind, n = max(counts.items(), key=lambda kv: kv[1])
    return kind if n >= KIND_SHARE * len(texts) else None


def kind_of_header(header: str) -> str | None:
    """The field a header that maps to nothing seems to be about: "Work Email", "Mobile No.",
    "Country of residence" — a word or a run of words of it is a known header of the field."""
    words = header_key(header).split()
    for size in range(min(len(words), 4), 0, -1):
        for i in range(len(words) - size + 1):
            canon = canonical_field(" ".join(words[i : i + size]))
            if canon in _KINDS:
                return canon
    return None


@dataclass(frozen=True, slots=True)
class ColumnMapping:
    """One column: its header, the field it maps to and why (`columns` or `alias`; `fallback`
    when it fills the field only if no other column does; `layout` when its vendor layout
    documents it as carrying nothing), the field its header or values suggest when it maps to
    none, and its first non-empty values."""

    header: str
    field: str | None
    by: str | None
    suggested: str | None
    samples: tuple[str, ...]


def map_columns(
    header: Sequence[str],
    rows: Sequence[Sequence[Any]],
    explicit: Mapping[str, str] | None = None,
) -> list[ColumnMapping]:
    """Each column of a table: what it maps to (read as normalize reads the row, its vendor
    layout included), or what it seems to hold. A column the layout documents as carrying
    nothing a contact holds maps to nothing `by` its "layout" and suggests nothing."""
    by_key = {header_key(k) for k in (explicit or {})}
    plan = header_plan(header, explicit)
    out: list[ColumnMapping] = []
    for i, (h, field) in enumerate(zip(header, plan.fields, strict=True)):
        values = [r[i] for r in rows if i < len(r)]
        shown = tuple(str(v) for v in values if v is not None and str(v).strip())[:SAMPLES_SHOWN]
        if field == IGNORE:
            out.append(ColumnMapping(h, None, "layout", None, shown))
            continue
        if field is not None:
            by = "columns" if header_key(h) in by_key else "alias"
            by = "fallback" if i in plan.fallback else by
            out.append(ColumnMapping(h, field, by, None, shown))
            continue
        suggested = kind_of_values(values)
        by_header = kind_of_header(h) if h and suggested is None else None
        # a header that names a field counts unless its values say otherwise
        if by_header and (not shown or any(value_kind(v) == by_header for v in values)):
            suggested = by_header
        out.append(ColumnMapping(h, None, None, suggested, shown))
    return out


def submissions_shape(source: str, file: str, payloads: Sequence[Mapping[str, Any]]) -> TableShape:
    """A JSON export's submissions as a table: their flattened fields (as normalize reads them)
    in the order first seen, and the first rows of values, so its fields can be checked too."""
    keys: dict[str, None] = {}
    rows: list[dict[str, Any]] = []
    for p in payloads:
        flat = flatten_submission(p)
        keys.update(dict.fromkeys(k for k, v in flat.items() if not isinstance(v, dict | list)))
        if len(rows) < SAMPLE_ROWS:
            rows.append(flat)
    header = tuple(keys)
    samples = tuple(tuple(r.get(k) for k in header) for r in rows)
    return TableShape(source, file, header, bool(header), samples, len(payloads), len(payloads))


def columns_fix(source: str, pairs: Iterable[tuple[str, str]]) -> str:
    """The `columns:` entry that would map these headers, as the user would write it."""
    body = ", ".join(f"{json.dumps(h, ensure_ascii=False)}: {f}" for h, f in pairs)
    return f"add to source {source}: columns: {{{body}}}"


def check_table(
    shape: TableShape, explicit: Mapping[str, str] | None = None
) -> list[SourceWarning]:
    """What is wrong with a table's columns: no header at all, columns that hold contact data
    but map to nothing, and headers the `columns:` map names that the table does not have."""
    explicit = explicit or {}
    return _check_columns(shape, explicit) + _missing_mapped([shape], explicit)


def check_file(
    shapes: Sequence[TableShape], explicit: Mapping[str, str] | None = None
) -> list[SourceWarning]:
    """What is wrong with one file's tables (a CSV, or the sheets of a workbook), and with the
    file as a whole: a header with no rows under it, or rows of which none became a record —
    then the file lost data (`loses_data`: the run is partial) unless it was empty on purpose.
    A header the `columns:` map names is missing when no table of the file has it."""
    if not shapes:
        return []
    explicit = explicit or {}
    out = [w for s in shapes for w in _check_columns(s, explicit)] + _missing_mapped(
        shapes, explicit
    )
    if sum(s.records for s in shapes):
        return out
    first = shapes[0]
    if all(s.found and not s.data_rows for s in shapes):
        msg = "the file has a header row but no rows under it"
        return [*out, SourceWarning(first.source, first.file, "no_rows", msg, first.header)]
    out = [replace(w, loses_data=True) if w.code == "unknown_header" else w for w in out]
    if not any(w.loses_data for w in out):
        rows = sum(s.data_rows for s in shapes)
        msg = f"none of its {rows} rows became a record (see leadflow rejects list)"
        out.append(SourceWarning(first.source, first.file, "nothing_read", msg, loses_data=True))
    return out


def _check_columns(shape: TableShape, explicit: Mapping[str, str]) -> list[SourceWarning]:
    source, where = shape.source, shape.where
    if not shape.header:
        return []
    cols = map_columns(shape.header, shape.samples, explicit)
    if not shape.found:
        pairs = [(c.header, c.suggested) for c in cols if c.suggested and c.header]
        if pairs:
            fix = columns_fix(source, pairs)
        else:
            fields = ", ".join(CANONICAL)
            fix = f'add to source {source}: columns: {{"<header>": <field>}} (fields: {fields})'
        msg = "no header row names an email, phone or name column we know"
        return [SourceWarning(source, where, "unknown_header", msg, shape.header, fix)]
    out: list[SourceWarning] = []
    for c in cols:
        if c.field is None and c.suggested:
            label = f'column "{c.header}"' if c.header else "a column without a header"
            msg = f"{label} maps to no field but seems to hold {c.suggested} data"
            fix = columns_fix(source, [(c.header, c.suggested)]) if c.header else ""
            out.append(SourceWarning(source, where, "unmapped_column", msg, fix=fix))
    return out


def _missing_mapped(
    shapes: Sequence[TableShape], explicit: Mapping[str, str]
) -> list[SourceWarning]:
    """A warning for each header the `columns:` map names that none of the tables has."""
    tables = [s for s in shapes if s.header]
    if not tables:
        return []
    source = tables[0].source
    where, what = (tables[0].where, "table") if len(shapes) == 1 else (tables[0].file, "file")
    present = {header_key(h) for s in tables for h in s.header}
    out: list[SourceWarning] = []
    for key, field in explicit.items():
        if header_key(key) not in present:
            msg = f'columns maps "{key}" to {field}, but the {what} has no such column'
            fix = f'check the header names in source {source} columns: (is "{key}" spelled as in the file?)'
            out.append(
                SourceWarning(source, where, "mapped_header_missing", msg, tables[0].header, fix)
            )
    return out
