"""Spreadsheet sources: CSV and XLSX files or published CSV URLs, one raw record per data row.

A row's id is file + sheet + a hash of its header and cells, so re-reading lands nothing new
and an edited row lands as one new record. Which row is the header is decided by a scorer the
flow passes in (how many cells name a known field); a sheet without an identifying header is
one reject for that sheet while the other sheets go on.
"""

from __future__ import annotations

import csv
import hashlib
import io
import os
import re
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from datetime import time as dtime
from functools import lru_cache
from itertools import chain
from typing import Any

from connectors.base import (
    SAMPLE_ROWS,
    ExtractReject,
    RawBatch,
    RawRecord,
    SourceWarning,
    TableShape,
    content_hash,
    expand_paths,
    gc_paused,
)
from connectors.http import HttpError

SUFFIXES = (".csv", ".tsv", ".txt", ".xlsx", ".xlsm")
# The csv module refuses fields over 128 KiB and would reject the whole file; a field's size is
# judged per record instead (sources' max_field_chars), so one huge cell costs only its row.
csv.field_size_limit(2**31 - 1)
DELIMITERS = (",", ";", "\t", "|")
HEADER_SCAN_ROWS = 30
CHUNK_ROWS = 50_000  # records per batch: a big file is landed in parts, memory stays flat
# letters only Windows-1254 / ISO-8859-9 put at these bytes (Ğ ğ İ ı Ş ş); in 1252 they are rare
_TURKISH_BYTES = frozenset(b"\xd0\xf0\xdd\xfd\xde\xfe")

HeaderScore = Callable[[Sequence[str]], tuple[int, bool]]
"""(how many cells name a known field, whether those fields can identify a person)."""


@dataclass(slots=True)
class TablePart:
    """A chunk of a table's records and rejects; a table's last part also carries its shape,
    and a file that cannot be read as a table carries a warning saying why."""

    records: list[RawRecord]
    rejects: list[ExtractReject]
    tables: list[TableShape] = field(default_factory=list)
    warnings: list[SourceWarning] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class RowDating:
    """How a sheet's rows are dated: the row's own date column when the header has one (which
    column and how its cells read are the flow's to say), else `fixed`, else the time the file's
    content was first landed (kept in the cursor by content hash, so a copy, clone or touch of
    the file never moves it). `shape` names the config that shapes the rows: it is part of the
    file's fingerprint, so changing it reads the files again."""

    column: Callable[[Sequence[str]], int | None] = lambda header: None
    parse: Callable[[Any], datetime | None] = lambda value: None
    fixed: datetime | None = None
    shape: str = ""


NO_DATING = RowDating()


def _default_score(row: Sequence[str]) -> tuple[int, bool]:
    texts = [c for c in row if c.strip()]
    return (len(texts), len(texts) >= 2)


def decode_text(data: bytes) -> tuple[str, str]:
    """(text, encoding): BOMs first, then strict UTF-8, then the Windows code page that fits."""
    if data.startswith(b"\xef\xbb\xbf"):
        return data[3:].decode("utf-8", "replace"), "utf-8-sig"
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        return data.decode("utf-16", "replace"), "utf-16"
    head = data[:4096]
    if len(head) >= 4 and head.count(0) > len(head) // 3:
        # UTF-16 without a BOM: every other byte of Latin text is NUL
        enc = "utf-16-le" if head[1::2].count(0) > head[0::2].count(0) else "utf-16-be"
        return data.decode(enc, "replace"), enc
    try:
        return data.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        pass
    enc = "cp1254" if any(b in _TURKISH_BYTES for b in data) else "cp1252"
    return data.decode(enc, "replace"), enc


# what other kinds of file start with: (magic bytes, what the file is, how to get a sheet from it)
_MAGIC = (
    (b"PK\x03\x04", "a ZIP archive", "an XLSX workbook named .csv? rename it .xlsx"),
    (b"%PDF", "a PDF document", "export the sheet as CSV or XLSX"),
    (b"\x89PNG", "a PNG image", "export the sheet as CSV or XLSX"),
    (b"\xff\xd8\xff", "a JPEG image", "export the sheet as CSV or XLSX"),
    (b"\x1f\x8b", "a gzip archive", "unpack it first"),
    (b"\xd0\xcf\x11\xe0", "an old Excel (.xls) or Office file", "save it as XLSX or CSV"),
)
# bytes no text file holds (NUL aside: UTF-16 is half NULs, and a stray NUL is dropped)
_CONTROL = frozenset(set(range(1, 32)) - {9, 10, 12, 13}) | {127}


def not_text(data: bytes) -> tuple[str, str] | None:
    """(what the bytes are, how to get a sheet from them) when they are plainly no text file:
    a known binary format, or more than 5% control bytes in the first 8 KiB; else None."""
    for magic, what, fix in _MAGIC:
        if data.startswith(magic):
            return what, fix
    head = data[:8192]
    if head and sum(b in _CONTROL for b in head) > len(head) // 20:
        return "binary data", "export the sheet as CSV or XLSX"
    return None


def sniff_delimiter(text: str) -> str:
    """The delimiter that splits the first rows into the most equal, widest columns."""
    sample = text[:65536]
    best, best_score = ",", (-1, -1, -1)
    for d in DELIMITERS:
        rows = [r for r in csv.reader(io.StringIO(sample), delimiter=d) if any(r)][:50]
        if len(rows) > 2:
            rows = rows[:-1]  # the sample may cut the last row short
        widths = Counter(len(r) for r in rows)
        if not widths:
            continue
        width, count = widths.most_common(1)[0]
        # A header that splits into the usual width first: a wrong delimiter that cuts quoted
        # cells (tabs, newlines inside quotes) into many short rows must not win on row count.
        header_fits = int(width > 1 and len(rows[0]) == width)
        score = (header_fits, count if width > 1 else 0, width)
        if score > best_score:
            best, best_score = d, score
    return best


def _cell(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.date().isoformat() if value.time() == dtime() else value.isoformat()
    if isinstance(value, date | dtime):
        return value.isoformat()
    if isinstance(value, str):
        return value.replace("\x00", "")
    return value


def csv_rows(data: bytes) -> tuple[Iterator[list[str]], str]:
    """Rows of CSV bytes in any of the encodings and delimiters we meet, and the encoding."""
    text, enc = decode_text(data)
    if "\x00" in text:
        text = text.replace("\x00", "")
    # CRLF and CR-only files (old Mac exports) alike; csv keeps quoted newlines inside fields.
    # Each replace copies a big text: only when there is something to replace.
    if "\r" in text:
        text = text.replace("\r\n", "\n")
        if "\r" in text:
            text = text.replace("\r", "\n")
    return csv.reader(_lines(text), delimiter=sniff_delimiter(text)), enc


def _lines(text: str) -> Iterator[str]:
    """The lines of a text, ends kept, as slices: as fast for csv as a StringIO, which would
    hold the whole text once more, four bytes a character."""
    start, find, size = 0, text.find, len(text)
    while start < size:
        end = find("\n", start) + 1 or size
        yield text[start:end]
        start = end


def _merged_filled(ws: Any) -> list[list[Any]]:
    """A fully loaded sheet's rows, merged ranges carrying their top-left value."""
    rows = [[_cell(v) for v in row] for row in ws.iter_rows(values_only=True)]
    for rng in ws.merged_cells.ranges:
        top = rows[rng.min_row - 1][rng.min_col - 1] if rng.min_row <= len(rows) else None
        for r in range(rng.min_row, min(rng.max_row, len(rows)) + 1):
            for c in range(rng.min_col, rng.max_col + 1):
                if c - 1 < len(rows[r - 1]):
                    rows[r - 1][c - 1] = top
    return rows


# A merged range in a sheet's XML (`<mergeCell ref="A1:C2"/>`, maybe with a namespace prefix).
_MERGE_CELL = re.compile(rb'<(?:[A-Za-z_][\w.-]*:)?mergeCell\b[^>]*?\bref="([^"]+)"')


def _merged_ranges(archive: Any, member: str) -> list[Any]:
    """The merged ranges of a sheet, read from its XML part in pieces (they follow the rows, in
    `<mergeCells>`): what only a fully loaded sheet would know otherwise."""
    from openpyxl.worksheet.cell_range import CellRange

    found = b""
    tail = b""
    with archive.open(member) as fh:
        while piece := fh.read(1 << 20):
            if found:
                found += piece
                continue
            window = tail + piece
            at = window.find(b"mergeCells")
            if at >= 0:
                found = window[max(0, at - 64) :]
            tail = window[-64:]
    return [CellRange(m.decode("ascii", "replace")) for m in _MERGE_CELL.findall(found)]


def _streamed_rows(ws: Any, merged: list[Any]) -> Iterator[list[Any]]:
    """A read-only sheet's rows one at a time, as `_merged_filled` gives them: merged ranges
    carry their top-left value, and every row is padded with None to the widest row or range
    seen so far (a fully loaded sheet pads them all to its widest row; what matters here is
    that no row comes shorter than the header before it)."""
    ws.reset_dimensions()  # never trust the file's stated size: it may cut rows short
    starts: dict[int, list[Any]] = {}
    for rng in merged:
        starts.setdefault(rng.min_row, []).append(rng)
    open_ranges: list[tuple[Any, Any]] = []  # (range, its top-left value)
    width = 0
    for r, values in enumerate(ws.iter_rows(values_only=True), start=1):
        row = [_cell(v) for v in values]
        for rng in starts.pop(r, ()):
            top = row[rng.min_col - 1] if rng.min_col - 1 < len(row) else None
            open_ranges.append((rng, top))
        if open_ranges:
            open_ranges = [(rng, top) for rng, top in open_ranges if rng.max_row >= r]
            width = max([width, *(rng.max_col for rng, _ in open_ranges)])
        width = max(width, len(row))
        if len(row) < width:
            row.extend([None] * (width - len(row)))
        for rng, top in open_ranges:
            for c in range(rng.min_col, rng.max_col + 1):
                row[c - 1] = top
        yield row


def xlsx_sheets(path: str | io.BytesIO, sheets: list[str] | None) -> Iterator[tuple[str, Any]]:
    """(sheet title, rows) for every sheet or the named ones; merged ranges carry their value.

    The workbook is read in read-only mode, a row at a time: a sheet of 500k rows loaded whole
    took gigabytes. Merged ranges, which only a fully loaded sheet knows, are read from the
    sheet's XML first (`_merged_ranges`). `data_only=True` gives formulas' cached values; a text
    cell that starts with = + - @ is text in the file and stays the same text here: nothing is
    ever evaluated.
    """
    from openpyxl import load_workbook

    wb = load_workbook(path, read_only=True, data_only=True)
    try:
        titles = [ws.title for ws in wb.worksheets]
        for name in sheets or titles:
            if name not in titles:
                yield name, None
                continue
            ws = wb[name]
            # openpyxl's own names for the open archive and the sheet's part in it
            merged = _merged_ranges(wb._archive, ws._worksheet_path)
            yield name, _streamed_rows(ws, merged)
    finally:
        wb.close()


def _find_header(rows: list[list[Any]], score: HeaderScore) -> tuple[int, list[str]] | None:
    best: tuple[int, int, list[str]] | None = None
    for i, row in enumerate(rows[:HEADER_SCAN_ROWS]):
        cells = [str(c).strip() if c is not None else "" for c in row]
        n, identifies = score(cells)
        if identifies and (best is None or n > best[0]):
            best = (n, i, cells)
    return (best[1], best[2]) if best else None


def _blank(cells: Sequence[Any]) -> bool:
    # a 0 or False cell is a value, not a blank
    return all(c is None or c == "" for c in cells)


def iter_row_chunks(
    source: str,
    fname: str,
    sheet: str,
    rows: Iterable[Sequence[Any]],
    received_at: datetime,
    score: HeaderScore = _default_score,
    chunk_rows: int = CHUNK_ROWS,
    dating: RowDating = NO_DATING,
) -> Iterator[TablePart]:
    """Records for the rows under the header, `chunk_rows` at a time; a row with the wrong
    number of cells is a reject (empty cells past the header's width do not count). A row is
    dated by its own date column when the header has one and the cell reads as a date, else by
    `received_at`. The last part carries the table's shape; a table without a single non-blank
    cell has none."""
    records: list[RawRecord] = []
    rejects: list[ExtractReject] = []
    it = iter(rows)
    head: list[list[Any]] = []
    for row in it:
        head.append(list(row))
        if len(head) >= HEADER_SCAN_ROWS:
            break
    table = "" if sheet == "csv" else sheet
    found = _find_header(head, score)
    if found is None:
        if any(_filled(r) for r in head):
            msg = f"no header row in the first {HEADER_SCAN_ROWS} rows names an email, phone or name column"
            rejects.append(
                ExtractReject(source, f"{fname}:{sheet}", "no_header", msg, repr(head[:3])[:2000])
            )
            # the likeliest header: the first row with the most text cells
            top = max(range(len(head)), key=lambda i: (_texts(head[i]), -i))
            under: list[tuple[Any, ...]] = []
            rows_under = 0
            for r in chain(head[top + 1 :], it):  # counted, not kept: the file may be big
                if _filled(r):
                    rows_under += 1
                    if len(under) < SAMPLE_ROWS:
                        under.append(tuple(r))
            header_found = tuple(_cells(head[top]))
            shape = TableShape(
                source, fname, header_found, False, tuple(under), rows_under, 0, top + 1, table
            )
            yield TablePart(records, rejects, [shape])
            return
        yield TablePart(records, rejects)
        return
    hidx, header = found
    width = len(header)
    while width and not header[width - 1]:
        width -= 1
    header = [h or f"column_{i + 1}" for i, h in enumerate(header[:width])]
    samples: tuple[tuple[Any, ...], ...] = ()
    landed = ragged = 0
    date_at = dating.column(header)
    # once per distinct cell: a date column repeats its values (days), and parsing is the cost
    parse_date = lru_cache(maxsize=65536)(dating.parse)
    # A row's id: sha256 of header and cells (the header's part hashed once per sheet), numbered
    # #2, #3 … when the same cells come again. Computed inline: this loop is a big CSV's hot path.
    prefix = f"{fname}:{sheet}:"
    head_hash = hashlib.sha256(("\x1f".join(header) + "\x1e").encode("utf-8", "surrogatepass"))
    seen: set[str] = set()
    repeats: Counter[str] = Counter()

    # the hot loop of a big CSV: no per-cell Python work and no extra call on a well-formed row
    for lineno, row in enumerate(chain(head[hidx + 1 :], it), start=hidx + 2):
        cells = row
        if len(cells) > width and _empty(cells[-1]):
            cells = list(cells)
            while len(cells) > width and _empty(cells[-1]):
                cells.pop()
        if not any(cells) and _blank(cells):
            continue
        if len(cells) != width:
            ragged += 1
            rejects.append(
                ExtractReject(
                    source,
                    f"{fname}:{sheet}:line{lineno}",
                    "ragged_row",
                    f"row has {len(cells)} cells, the header has {width}",
                    repr(row)[:2000],
                )
            )
            continue
        try:
            text = "\x1f".join(cells)
        except TypeError:  # workbook cells: numbers, None
            text = "\x1f".join(map(str, cells))
        h = head_hash.copy()
        h.update(text.encode("utf-8", "surrogatepass"))
        key = h.hexdigest()[:20]
        known = len(seen)
        seen.add(key)  # one set operation: it grew unless the key was there
        if len(seen) > known:
            rid = prefix + key
        else:
            repeats[key] += 1
            rid = f"{prefix}{key}#{repeats[key] + 1}"
        payload = dict(zip(header, cells, strict=False))  # lengths checked above
        when = received_at if date_at is None else parse_date(cells[date_at]) or received_at
        records.append(RawRecord(source, "spreadsheet", rid, when, payload))
        if len(records) >= chunk_rows:
            samples = samples or _samples(records)
            landed += len(records)
            yield TablePart(records, rejects)
            records, rejects = [], []
    samples = samples or _samples(records)
    landed += len(records)
    shape = TableShape(
        source, fname, tuple(header), True, samples, landed + ragged, landed, hidx + 1, table
    )
    yield TablePart(records, rejects, [shape])


def _samples(records: list[RawRecord]) -> tuple[tuple[Any, ...], ...]:
    return tuple(tuple(r.payload.values()) for r in records[:SAMPLE_ROWS])


def _cells(row: Sequence[Any]) -> list[str]:
    return [str(c).strip() if c is not None else "" for c in row]


def _texts(row: Sequence[Any]) -> int:
    return sum(1 for c in _cells(row) if c)


def _empty(cell: Any) -> bool:
    """A cell with nothing in it: None, or text of spaces only."""
    return cell is None or (isinstance(cell, str) and not cell.strip())


def _filled(row: Sequence[Any]) -> bool:
    return not all(_empty(c) for c in row)


def iter_table(
    source: str,
    fname: str,
    data_or_path: bytes | str,
    received_at: datetime,
    sheets: list[str] | None,
    score: HeaderScore,
    is_xlsx: bool,
    chunk_rows: int = CHUNK_ROWS,
    dating: RowDating = NO_DATING,
) -> Iterator[TablePart]:
    """Every sheet of a workbook, or the one table of a CSV, in chunks; a broken file is a reject
    and a warning, a file without a single filled cell a warning."""
    odd = None
    landed = shaped = False
    try:
        if is_xlsx:
            src = io.BytesIO(data_or_path) if isinstance(data_or_path, bytes) else data_or_path
            parts: Iterable[tuple[str, Any]] = xlsx_sheets(src, sheets)
        else:
            if isinstance(data_or_path, str):
                with open(data_or_path, "rb") as fh:
                    data_or_path = fh.read()
            odd = not_text(data_or_path)
            parts = [("csv", csv_rows(data_or_path)[0])]
            del data_or_path  # the decoded text is what is read from here on
        for sheet, rows in parts:
            if rows is None:
                msg = f"no sheet named {sheet!r}"
                reject = ExtractReject(source, f"{fname}:{sheet}", "sheet_not_found", msg, "")
                fix = f"check the sheet names in source {source} sheets:"
                warning = SourceWarning(source, fname, "sheet_not_found", msg, fix=fix)
                shaped = True
                yield TablePart([], [reject], [], [warning])
                continue
            for part in iter_row_chunks(
                source, fname, sheet, rows, received_at, score, chunk_rows, dating
            ):
                if odd and part.tables and not part.tables[0].found:
                    # no header in bytes that are no text: say what the file is instead
                    msg = f"the file is {odd[0]}, not a CSV"
                    part = TablePart(
                        [],
                        [ExtractReject(source, fname, "unreadable_file", msg, "")],
                        warnings=[
                            SourceWarning(
                                source, fname, "not_text", msg, fix=odd[1], loses_data=True
                            )
                        ],
                    )
                landed = landed or bool(part.records)
                shaped = shaped or bool(part.tables or part.rejects or part.warnings)
                yield part
    except Exception as exc:
        # a corrupt workbook (not a zip, broken XML: openpyxl and zipfile raise many kinds) or
        # an unreadable file: one reject, the other files go on
        msg = f"{type(exc).__name__}: {exc}"[:500]
        why = f"the file cannot be read: {msg}"
        fix = "open it in a spreadsheet program and save it again as XLSX or CSV"
        warning = SourceWarning(
            source, fname, "unreadable_file", why, fix=fix, loses_data=not landed
        )
        yield TablePart(
            [], [ExtractReject(source, fname, "unreadable_file", msg, "")], [], [warning]
        )
        return
    if not shaped:
        what = "the workbook has no filled cell" if is_xlsx else "the file is empty"
        yield TablePart([], [], [], [SourceWarning(source, fname, "empty_file", what)])


def read_table(
    source: str,
    fname: str,
    data_or_path: bytes | str,
    received_at: datetime,
    sheets: list[str] | None,
    score: HeaderScore,
    is_xlsx: bool,
) -> tuple[list[RawRecord], list[ExtractReject]]:
    """One whole table at once (a small file): every chunk of `iter_table` joined."""
    records: list[RawRecord] = []
    rejects: list[ExtractReject] = []
    for part in iter_table(source, fname, data_or_path, received_at, sheets, score, is_xlsx):
        records += part.records
        rejects += part.rejects
    return records, rejects


def _paused_chunks(chunks: Iterator[TablePart]) -> Iterator[TablePart]:
    """The chunks of one file, read with the cyclic GC paused until the file is done.

    Re-enabled between chunks, it would scan each chunk's fresh records at once (12% of a big
    CSV's time). The consumer's landing of a chunk runs paused too: it makes no lasting cycles,
    and whatever it leaves is collected when the file is done (or the generator is closed).
    """
    with gc_paused():
        yield from chunks


# A file modified this recently may still be being written: wait for it to settle.
SETTLE_SECONDS = 1.0
STABLE_READ_TRIES = 3


class FileChanging(RuntimeError):
    """A file kept changing while it was read."""


def read_settled(path: str, now: Callable[[], float] = time.time) -> tuple[bytes, float]:
    """The file's bytes as one consistent version, and its mtime.

    A version counts when the file was not modified for SETTLE_SECONDS before the read and is
    the same (size, mtime, inode) after it; otherwise wait and try again, then give up with
    FileChanging. Reading once also makes the fingerprint the fingerprint of what was read.
    """
    for attempt in range(STABLE_READ_TRIES):
        before = os.stat(path)
        age = now() - before.st_mtime
        if 0 <= age < SETTLE_SECONDS:  # (a future mtime is clock skew: no waiting helps)
            time.sleep(SETTLE_SECONDS - age)
            continue
        with open(path, "rb") as fh:
            data = fh.read()
        after = os.stat(path)
        same = (before.st_size, before.st_mtime_ns, before.st_ino) == (
            after.st_size,
            after.st_mtime_ns,
            after.st_ino,
        )
        if same and len(data) == after.st_size:
            return data, after.st_mtime
        time.sleep(SETTLE_SECONDS * (attempt + 1) / STABLE_READ_TRIES)
    raise FileChanging(f"{os.path.basename(path)} kept changing while it was read")


def first_landed(cursor: Mapping[str, Any] | None) -> dict[str, str]:
    """Content hash → when that content was first landed (ISO), as a file cursor keeps it."""
    return dict((cursor or {}).get("first_landed", {}))


def fingerprint(content: str, shape: str) -> str:
    """A file's cursor fingerprint: its content, and the config that shapes its rows."""
    return content if not shape else content_hash(f"{content}\x1f{shape}")


def iter_spreadsheet(
    source: str,
    path: str,
    cursor: dict[str, Any] | None,
    sheets: list[str] | None = None,
    *,
    score: HeaderScore = _default_score,
    max_file_bytes: int = 512 * 1024 * 1024,
    chunk_rows: int = CHUNK_ROWS,
    dating: RowDating = NO_DATING,
    now: datetime | None = None,
    landed: Mapping[str, str] | None = None,
) -> Iterator[RawBatch]:
    """Batches of up to `chunk_rows` records per changed file; unchanged files are not read again.

    A file is read once, as one consistent version (`read_settled`), and fingerprinted by the
    bytes read and `dating.shape`. Only a file's last batch carries its new fingerprint: a run
    stopped halfway reads the file again next time, and what was landed already is not landed
    twice. A file being rewritten while it is read is read again once it settles; one that never
    does is a `file_changing` reject and its cursor entry does not move, so the next run reads it
    again. A file emptied after a version of it was read lands nothing and leaves its cursor
    entry as it was. Rows without a date of their own are dated `dating.fixed`, else by when the file's
    content was first landed: `landed` (content hash → ISO time; default: the cursor's), else
    `now`, which the cursor then keeps. A file's modification time dates nothing.
    """
    seen: dict[str, str] = dict((cursor or {}).get("files", {}))
    firsts: dict[str, str] = first_landed(cursor) if landed is None else dict(landed)
    stamp = (now or datetime.now(UTC)).astimezone(UTC).replace(microsecond=0)

    def state() -> dict[str, Any]:
        return {"files": dict(seen), "first_landed": dict(firsts)}

    for fpath in expand_paths(path, SUFFIXES):
        fname = os.path.basename(fpath)
        size = os.path.getsize(fpath)
        if size > max_file_bytes:
            msg = f"file is {size} bytes, limit {max_file_bytes}"
            if seen.get(fpath) != f"size:{size}":
                seen[fpath] = f"size:{size}"
                yield RawBatch(
                    [], state(), [ExtractReject(source, fname, "file_too_large", msg, "")]
                )
            continue
        try:
            data, _ = read_settled(fpath)
        except FileChanging as exc:
            reject = ExtractReject(source, fname, "file_changing", str(exc), "")
            yield RawBatch([], state(), [reject])
            continue
        if not data and fpath in seen:
            # Emptied after a version was read: most often an editor that truncates before it
            # writes. Nothing to land, so the cursor keeps the last version that had rows.
            continue
        content = content_hash(data)
        fp = fingerprint(content, dating.shape)
        if seen.get(fpath) == fp:
            continue
        received = dating.fixed
        if received is None:
            # kept by the first batch already: a read stopped halfway dates the rest the same
            firsts.setdefault(content, stamp.isoformat())
            received = datetime.fromisoformat(firsts[content])
        before = state()
        seen[fpath] = fp
        after = state()
        is_xlsx = fpath.lower().endswith((".xlsx", ".xlsm"))
        chunks = iter_table(
            source, fname, data, received, sheets, score, is_xlsx, chunk_rows, dating
        )
        del data  # the table reader holds the bytes only until it has decoded them
        held = TablePart([], [])
        for i, part in enumerate(_paused_chunks(chunks)):
            if i:
                yield _batch(held, before)
            held = part
        yield _batch(held, after)


def _batch(part: TablePart, cursor: dict[str, Any]) -> RawBatch:
    return RawBatch(
        records=part.records,
        cursor=cursor,
        rejects=part.rejects,
        warnings=part.warnings,
        tables=part.tables,
    )


def iter_spreadsheet_url(
    source: str,
    url: str,
    cursor: dict[str, Any] | None,
    fetch: Callable[[str], bytes],
    *,
    score: HeaderScore = _default_score,
    now: datetime,
    dating: RowDating = NO_DATING,
) -> Iterator[RawBatch]:
    """A published CSV export (Google Sheets `…/pub?output=csv`); skipped when its bytes and
    the config shaping its rows are unchanged. Rows without a date of their own are dated
    `dating.fixed`, else by when this content was first fetched (`now`)."""
    try:
        data = fetch(url)
    except HttpError as exc:
        # the cursor stays where it was: the next run fetches again
        yield RawBatch(
            [],
            dict(cursor or {}),
            [ExtractReject(source, url.split("?")[0], "http_error", str(exc), "")],
        )
        return
    fp = fingerprint(content_hash(data), dating.shape)
    if (cursor or {}).get("sha256") == fp:
        return
    # one name per URL (gid included): the same row in two tabs is two records
    fname = "url-" + content_hash(url)[:12]
    whole = TablePart([], [])
    for part in _paused_chunks(
        iter_table(
            source,
            fname,
            data,
            dating.fixed or now,
            None,
            score,
            data[:2] == b"PK",
            dating=dating,
        )
    ):
        whole.records += part.records
        whole.rejects += part.rejects
        whole.tables += part.tables
        whole.warnings += part.warnings
    yield _batch(whole, {"sha256": fp})
