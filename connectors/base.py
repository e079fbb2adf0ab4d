"""What every connector yields: raw records with provenance, in batches, with their cursor."""

from __future__ import annotations

import gc
import hashlib
import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, Protocol

JSONValue = Any


@dataclass(frozen=True, slots=True)
class RawRecord:
    """One record exactly as the source gave it, plus where and when it came from."""

    source: str
    source_kind: str
    source_record_id: str
    received_at: datetime
    payload: dict[str, JSONValue]

    def payload_json(self) -> str:
        return json.dumps(self.payload, ensure_ascii=False, sort_keys=True, default=str)


@dataclass(frozen=True, slots=True)
class ExtractReject:
    """A record the connector could read but not take apart; it is kept with its reason."""

    source: str
    source_record_id: str
    code: str
    message: str
    raw: str


# Extract rejects that mean the read of the source stopped short (not a bad record): what came
# before is landed, the cursor stays short of the failure, and the run says the source failed.
READ_FAILURES = frozenset({"http_error", "pagination", "malformed_page", "file_changing"})


@dataclass(frozen=True, slots=True)
class SourceWarning:
    """Something about a source's file that a person should see: it is on stderr, in the run's
    summary and in `pipeline_runs.stats`, never only in a log.

    `loses_data` marks a file that had content and yielded nothing: the run is then partial.
    `header` is the header row found (or the likeliest one when none named a known field) and
    `fix` the config that would help, e.g. `sources.fair.columns: {"Correo": email}`.
    """

    source: str
    file: str
    code: str
    message: str
    header: tuple[str, ...] = ()
    fix: str = ""
    loses_data: bool = False

    def line(self) -> str:
        """The warning in one line, as stderr and the summary print it."""
        text = f"source {self.source}: {self.file}: {self.message}"
        if self.header:
            text += f"; header row found: {' | '.join(self.header)}"
        if self.fix:
            text += f"; fix: {self.fix}"
        return text

    @classmethod
    def from_dict(cls, d: dict[str, JSONValue]) -> SourceWarning:
        return cls(**{**d, "header": tuple(d.get("header") or ())})

    def as_dict(self) -> dict[str, JSONValue]:
        return {
            "source": self.source,
            "file": self.file,
            "code": self.code,
            "message": self.message,
            "header": list(self.header),
            "fix": self.fix,
            "loses_data": self.loses_data,
        }


# rows under a table's header kept on its shape, enough to tell what each column holds
SAMPLE_ROWS = 50


@dataclass(frozen=True, slots=True)
class TableShape:
    """What a connector found in one table (a CSV, a sheet of a workbook, a JSON export): the
    header row and the first rows under it, so the columns can be checked against the field map
    without reading the file again. `found` is False when no row qualified as the header; then
    `header` is the likeliest candidate (the first row with the most text cells). `data_rows`
    counts the non-blank rows under the header, `records` those that became records."""

    source: str
    file: str
    header: tuple[str, ...]
    found: bool
    samples: tuple[tuple[JSONValue, ...], ...] = ()
    data_rows: int = 0
    records: int = 0
    header_row: int = 0  # 1-based row of the header in the table; 0 when there is none
    table: str = ""  # the sheet of a workbook; "" for a CSV or a JSON export

    @property
    def where(self) -> str:
        return f"{self.file} (sheet {self.table})" if self.table else self.file


@dataclass(frozen=True, slots=True)
class RawBatch:
    """A batch of records and the cursor that holds once they are landed; `warnings` and
    `tables` tell what the connector noticed about the files it read."""

    records: list[RawRecord]
    cursor: dict[str, JSONValue]
    rejects: list[ExtractReject] = field(default_factory=list)
    skipped: dict[str, int] = field(default_factory=dict)
    warnings: list[SourceWarning] = field(default_factory=list)
    tables: list[TableShape] = field(default_factory=list)


# What a record may hold: longer text or deeper nesting is no contact, and would cost every later
# stage (and every reader) for nothing. A record beyond these is an extract reject with its reason.
DEFAULT_MAX_FIELD_CHARS = 256 * 1024
MAX_JSON_DEPTH = 32


def beyond_limits(payload: Any, max_chars: int, max_depth: int = MAX_JSON_DEPTH) -> str | None:
    """Why a payload is beyond the limits (a string longer than `max_chars`, nesting deeper than
    `max_depth`), or None. Iterative, so no payload can exhaust the stack. A value's path (for
    the reason) is spelled out only when it is beyond: a sheet row's fields are all checked,
    and naming each one took more time than checking it."""
    stack: list[tuple[Any, int, Any]] = [(payload, 0, None)]
    while stack:
        value, depth, at = stack.pop()
        if depth > max_depth:
            return f"{_path(at) or 'the record'} is nested deeper than {max_depth} levels"
        if isinstance(value, str):
            if len(value) > max_chars:
                return f"{_path(at) or 'a field'} has {len(value)} characters, limit {max_chars}"
        elif isinstance(value, dict):
            for key, item in value.items():
                if len(str(key)) > max_chars:
                    return f"a field name has {len(str(key))} characters, limit {max_chars}"
                stack.append((item, depth + 1, (at, key, False)))
        elif isinstance(value, list | tuple):
            stack.extend((item, depth + 1, (at, i, True)) for i, item in enumerate(value))
    return None


def _path(at: Any) -> str:
    """`beyond_limits`' path of a value: `a.b[2].c`, each field name cut to 64 characters."""
    steps: list[tuple[Any, bool]] = []
    while at is not None:
        at, step, index = at
        steps.append((step, index))
    where = ""
    for step, index in reversed(steps):
        if index:
            where = f"{where}[{step}]"
        else:
            name = str(step)[:64]
            where = f"{where}.{name}" if where else name
    return where


def within_limits(batch: RawBatch, max_chars: int) -> RawBatch:
    """The batch with each record beyond the limits turned into a `too_large` reject."""
    records: list[RawRecord] = []
    rejects = list(batch.rejects)
    for r in batch.records:
        why = beyond_limits(r.payload, max_chars)
        if why is None:
            records.append(r)
        else:
            # a payload too deep to serialize safely keeps no preview; the reason says enough
            preview = "" if "nested" in why else r.payload_json()[:2000]
            rejects.append(ExtractReject(r.source, r.source_record_id, "too_large", why, preview))
    if len(records) == len(batch.records):
        return batch
    return RawBatch(records, batch.cursor, rejects, batch.skipped, batch.warnings, batch.tables)


class Connector(Protocol):
    def __call__(self, cursor: dict[str, JSONValue] | None) -> Iterator[RawBatch]: ...


def content_hash(data: bytes | str) -> str:
    if isinstance(data, str):
        data = data.encode("utf-8", "surrogatepass")
    return hashlib.sha256(data).hexdigest()


def file_mtime(path: str) -> datetime:
    import os

    return datetime.fromtimestamp(os.stat(path).st_mtime, tz=UTC).replace(microsecond=0)


def file_fingerprint(path: str) -> str:
    """sha256 of a file's bytes; for a folder (Maildir, .eml folder), of its files' names, sizes and mtimes."""
    import os

    h = hashlib.sha256()
    if os.path.isdir(path):
        for root, dirs, files in os.walk(path):
            dirs.sort()
            for name in sorted(files):
                st = os.stat(os.path.join(root, name))
                rel = os.path.relpath(os.path.join(root, name), path)
                h.update(
                    f"{rel}\0{st.st_size}\0{st.st_mtime_ns}\n".encode("utf-8", "surrogateescape")
                )
        return h.hexdigest()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def expand_paths(pattern: str, suffixes: tuple[str, ...]) -> list[str]:
    """A file, every matching file in a folder, or a glob; sorted so runs are reproducible."""
    import glob
    import os

    if os.path.isdir(pattern):
        found = [os.path.join(pattern, n) for n in os.listdir(pattern)]
    elif os.path.isfile(pattern):
        return [pattern]
    else:
        found = glob.glob(pattern)
    return sorted(p for p in found if os.path.isfile(p) and p.lower().endswith(suffixes))


def with_first_landing(
    batch: RawBatch, firsts: dict[str, str], fp: str, fallback: datetime
) -> RawBatch:
    """`batch` with the cursor keeping when the content `fp` was first landed, once a record
    was dated by it (`fallback`: a message or submission without a time of its own). `firsts`
    (content fingerprint → ISO time) is updated in place; a file whose records all carry their
    own times adds nothing."""
    if fp not in firsts and any(r.received_at == fallback for r in batch.records):
        firsts[fp] = fallback.isoformat()
    if not firsts:
        return batch
    return replace(batch, cursor={**batch.cursor, "first_landed": dict(firsts)})


def iter_changed_files(
    paths: list[str], cursor: dict[str, JSONValue] | None
) -> Iterator[tuple[str, str, dict[str, JSONValue]]]:
    """Files whose fingerprint differs from the cursor's, each with the cursor that holds after it.

    The cursor is {"files": {path: sha256}}; an unchanged file is not read again.
    """
    seen: dict[str, str] = dict((cursor or {}).get("files", {}))
    for path in paths:
        fp = file_fingerprint(path)
        if seen.get(path) == fp:
            continue
        seen[path] = fp
        yield path, fp, {"files": dict(seen)}


_gc_lock = threading.Lock()
_gc_pauses = 0
_gc_was_enabled = True


@contextmanager
def gc_paused() -> Iterator[None]:
    """The cyclic garbage collector waits while a connector builds a big batch of records.

    A million rows become millions of small dicts and lists that hold no cycles; the collector
    would rescan them over and over as they accumulate (about 40% of a big CSV's read time).
    Nested and concurrent pauses (one thread per source) count, and the last one out restores it.
    """
    global _gc_pauses, _gc_was_enabled
    with _gc_lock:
        if _gc_pauses == 0:
            _gc_was_enabled = gc.isenabled()
            gc.disable()
        _gc_pauses += 1
    try:
        yield
    finally:
        with _gc_lock:
            _gc_pauses -= 1
            if _gc_pauses == 0 and _gc_was_enabled:
                gc.enable()
