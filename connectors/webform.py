"""Web-form sources: provider APIs over HTTP (Typeform, HubSpot, generic), JSON exports, webhook spools."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from itertools import islice
from typing import Any

from connectors.base import (
    ExtractReject,
    RawBatch,
    RawRecord,
    SourceWarning,
    content_hash,
    file_mtime,
    iter_changed_files,
    with_first_landing,
)
from connectors.http import (
    HttpClient,
    HttpError,
    NextLinkPaginator,
    PageNumberPaginator,
    PaginationError,
    Paginator,
    RateLimit,
    TokenPaginator,
    dig,
    iter_pages,
)

ID_KEYS = ("id", "submission_id", "response_id", "token", "conversionId")
TIME_KEYS = ("submitted_at", "submittedAt", "created_at", "timestamp", "date")
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def parse_time(value: Any) -> datetime | None:
    """A submission time from ISO text, epoch seconds or epoch milliseconds (HubSpot)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        value = int(value)
    if isinstance(value, int | float):
        secs = value / 1000 if abs(value) > 1e11 else value
        try:
            return datetime.fromtimestamp(secs, tz=UTC)
        except (OverflowError, OSError, ValueError):
            return None
    if isinstance(value, str):
        try:
            dt = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
        except ValueError:
            return None
        return dt.astimezone(UTC) if dt.tzinfo else dt.replace(tzinfo=UTC)
    return None


def _reject(source: str, rid: str, code: str, message: str, raw: Any) -> ExtractReject:
    text = raw if isinstance(raw, str) else json.dumps(raw, ensure_ascii=False, default=str)
    return ExtractReject(source, rid, code, message[:500], text[:4000])


# --- JSON exports and webhook spools -------------------------------------------------------


def _submissions(doc: Any) -> list[Any]:
    if isinstance(doc, list):
        return doc
    if isinstance(doc, dict):
        for key in ("submissions", "items", "results", "data", "responses"):
            if isinstance(doc.get(key), list):
                return list(doc[key])
    raise ValueError("no list of submissions found in the export")


def submission_record(
    source: str, sub: Any, fallback: datetime, where: str
) -> RawRecord | ExtractReject:
    """One submission of an export or a spool: its own id, else a reject saying it has none."""
    sid = next((sub.get(k) for k in ID_KEYS if isinstance(sub, dict) and sub.get(k)), None)
    if not isinstance(sub, dict) or sid is None:
        return _reject(source, where, "no_submission_id", "submission has no id", sub)
    when = next((sub[k] for k in TIME_KEYS if k in sub), None)
    return RawRecord(source, "webform", str(sid), parse_time(when) or fallback, sub)


def _split(
    items: list[RawRecord | ExtractReject],
) -> tuple[list[RawRecord], list[ExtractReject]]:
    records = [r for r in items if isinstance(r, RawRecord)]
    return records, [r for r in items if isinstance(r, ExtractReject)]


# Submissions per batch of an export file: a big export is landed in parts.
SUBMISSIONS_PER_BATCH = 20_000


def iter_webform_export(
    source: str,
    path: str,
    cursor: dict[str, Any] | None,
    now: datetime | None = None,
    landed: Mapping[str, str] | None = None,
    batch_submissions: int = SUBMISSIONS_PER_BATCH,
) -> Iterator[RawBatch]:
    """A JSON export file, in batches of up to `batch_submissions` submissions, or a webhook
    spool folder.

    The export's list of submissions is parsed one submission at a time (`_export_items`), so
    a big export holds its text and one batch of parsed submissions, never all of them. Only
    the file's last batch carries its new fingerprint (as for sheets): a run stopped halfway
    reads it again next time, and what was landed already is not landed twice.
    A submission without a submitted/created time is dated by when the export's content was
    first landed (`landed`: content fingerprint → ISO time; default: the cursor's), else `now`,
    which the cursor then keeps; never by the file's modification time (as for sheets)."""
    if os.path.isdir(path) or path.endswith(".jsonl"):
        yield from iter_spool(source, path, cursor)
        return
    firsts: dict[str, str] = dict((cursor or {}).get("first_landed", {}))
    if landed is not None:
        firsts = dict(landed)
    stamp = (now or datetime.now(UTC)).astimezone(UTC).replace(microsecond=0)
    before: dict[str, Any] = {"files": dict((cursor or {}).get("files", {}))}
    for fpath, fp, after in iter_changed_files([path], cursor):
        fallback = datetime.fromisoformat(firsts.get(fp, stamp.isoformat()))
        with open(fpath, "rb") as fh:
            raw = fh.read()
        fname = os.path.basename(fpath)
        if not raw.strip():
            warning = SourceWarning(source, fname, "empty_file", "the file is empty")
            yield with_first_landing(RawBatch([], after, warnings=[warning]), firsts, fp, fallback)
            before = after
            continue
        items = _export_items(source, raw, fallback, fpath)
        del raw  # the text the items are read from is all they need
        held: RawBatch | None = None
        landed_any = False
        why: set[str] = set()  # the rejects' reasons, for a file of which nothing was read
        while part := list(islice(items, batch_submissions)):
            if held is not None:
                yield with_first_landing(held, firsts, fp, fallback)
            records, rejects = _split(part)
            landed_any = landed_any or bool(records)
            if not landed_any and len(why) < 20:
                why.update(f"{j.code}: {j.message}" for j in rejects)
            held = RawBatch(records=records, cursor=before, rejects=rejects)
        last = held or RawBatch([], before)
        warnings = []
        if not landed_any:
            reasons = "; ".join(sorted(why))[:300]
            msg = f"no submission could be read ({reasons or 'the list of submissions is empty'})"
            warnings.append(SourceWarning(source, fname, "nothing_read", msg, loses_data=bool(why)))
        last = replace(last, cursor=after, warnings=warnings)
        yield with_first_landing(last, firsts, fp, fallback)
        before = after


def _export_items(
    source: str, raw: bytes, fallback: datetime, fpath: str
) -> Iterator[RawRecord | ExtractReject]:
    """The records and rejects of an export, in the file's order, a submission at a time.

    The list of submissions (the document itself, or the first of the export keys whose value
    is a list) is walked element by element with the standard decoder: each element parses
    exactly as `json.loads` would parse it. One nested too deeply to parse is a reject and the
    walk goes on after it; a break in the list ends it with a reject naming the byte it broke
    at, after every submission before it. A document without such a list, or whose bytes are
    not text, is read whole as before (`_whole_export`)."""
    try:
        encoding = json.detect_encoding(raw)
        text = raw.decode(encoding, "surrogatepass")
    except UnicodeDecodeError:
        yield from _whole_export(source, raw, fallback, fpath)
        return
    at = _list_start(text)
    if at is None:
        yield from _whole_export(source, raw, fallback, fpath)
        return
    del raw
    n = 0
    for kind, start, value in _walk_list(text, at):
        where = f"{fpath}#{n}"
        if kind == "item":
            yield submission_record(source, value, fallback, where)
        elif kind == "deep":
            msg = "nested too deeply to parse"
            yield _reject(source, where, "malformed_json", msg, text[start:value][:4000])
        else:  # broken: the rest from here is one reject
            offset = len(text[:start].encode(encoding, "surrogatepass"))
            msg = (
                f"the export breaks at byte {offset} ({value}): the {n} submission(s) "
                "before it were read, the rest from there is kept here"
            )
            tail = text[start : start + 4000].encode(encoding, "surrogatepass")
            yield _reject(
                source, f"{fpath}@{offset}", "malformed_json", msg, tail.decode(encoding, "replace")
            )
            return
        n += 1


def _whole_export(
    source: str, raw: bytes, fallback: datetime, fpath: str
) -> list[RawRecord | ExtractReject]:
    """An export parsed whole: its submissions, what a broken one salvages, or one reject."""
    try:
        return [
            submission_record(source, s, fallback, f"{fpath}#{i}")
            for i, s in enumerate(_submissions(json.loads(raw)))
        ]
    except RecursionError:
        # one submission nested too deeply for the parser must not cost the others theirs
        return _one_by_one(source, raw, fallback, fpath)
    except (ValueError, UnicodeDecodeError) as exc:
        # cut short or broken part-way: what parses before the break still lands
        return _salvaged(source, raw, fallback, fpath, exc)


def _salvaged(
    source: str, raw: bytes, fallback: datetime, fpath: str, exc: Exception
) -> list[RawRecord | ExtractReject]:
    """The submissions of a broken export up to the break, then one reject for the rest that
    says at which byte it broke; the whole file one reject when no list of submissions opens it."""
    text = raw.decode("utf-8", "surrogateescape")
    found = complete_items(text)
    if found is None:
        return [_reject(source, fpath, "malformed_json", str(exc), text[:4000])]
    subs, stop, why = found
    out = [submission_record(source, s, fallback, f"{fpath}#{i}") for i, s in enumerate(subs)]
    if stop is not None:
        offset = len(text[:stop].encode("utf-8", "surrogateescape"))
        msg = (
            f"the export breaks at byte {offset} ({why}): the {len(subs)} submission(s) "
            "before it were read, the rest from there is kept here"
        )
        tail = text[stop:].encode("utf-8", "surrogateescape")[:4000].decode("utf-8", "replace")
        out.append(_reject(source, f"{fpath}@{offset}", "malformed_json", msg, tail))
    return out


_WS = re.compile(r"[ \t\n\r]*")
_DECODER = json.JSONDecoder()


def _skip(text: str, i: int) -> int:
    return _WS.match(text, i).end()  # type: ignore[union-attr]  # `*` always matches


def _list_start(text: str) -> int | None:
    """Where the first element of the submissions list starts (just past its `[`): the document
    itself a list, or the first top-level export key holding one; None when there is none."""
    dec = _DECODER
    i = _skip(text, 1 if text.startswith("\ufeff") else 0)
    if text[i : i + 1] == "{":
        i = _skip(text, i + 1)
        while True:  # the top-level keys, until the one holding the list
            try:
                key, i = dec.raw_decode(text, i)
            except ValueError:
                return None
            i = _skip(text, i)
            if not isinstance(key, str) or text[i : i + 1] != ":":
                return None
            i = _skip(text, i + 1)
            if key in _LIST_KEYS and text[i : i + 1] == "[":
                break
            try:
                _value, i = dec.raw_decode(text, i)
            except (ValueError, RecursionError):
                return None
            i = _skip(text, i)
            if text[i : i + 1] != ",":
                return None
            i = _skip(text, i + 1)
    if text[i : i + 1] != "[":
        return None
    return i + 1


def _walk_list(text: str, i: int) -> Iterator[tuple[str, int, Any]]:
    """The list's elements from `i` on, as (kind, where it starts, value): ("item", start, the
    parsed element), ("deep", start, where it ends) for one nested too deeply to parse, and a
    last ("broken", start, why) where the list breaks off."""
    dec = _DECODER
    i = _skip(text, i)
    if text[i : i + 1] == "]":
        return
    while True:
        start = i
        try:
            item, i = dec.raw_decode(text, i)
            yield "item", start, item
        except json.JSONDecodeError as err:
            why = err.msg if err.pos < len(text) else "the file ends here"
            yield "broken", start, why
            return
        except RecursionError:
            end = _value_end(text, start)
            if end is None:
                yield "broken", start, "nested too deeply to parse"
                return
            yield "deep", start, end
            i = end
        i = _skip(text, i)
        if text[i : i + 1] == ",":
            i = _skip(text, i + 1)
            continue
        if text[i : i + 1] == "]":
            return
        yield "broken", i, "expected , or ]" if i < len(text) else "the file ends inside the list"
        return


# A JSON string (escapes included) or a bracket: what `_value_end` counts brackets over.
_STRING_OR_BRACKET = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"|[\[\]{}]', re.S)


def _value_end(text: str, start: int) -> int | None:
    """Where the array or object starting at `start` ends, found without parsing it (strings
    skipped, brackets counted); None when it never closes."""
    depth = 0
    for m in _STRING_OR_BRACKET.finditer(text, start):
        token = m.group()
        if token in "[{":
            depth += 1
        elif token in "]}":
            depth -= 1
            if depth == 0:
                return m.end()
    return None


def complete_items(text: str) -> tuple[list[Any], int | None, str] | None:
    """(the complete elements of the submissions list, where the first broken one starts or None,
    why it is broken); None when the text does not open with such a list (a list, or an object
    with one of the export keys)."""
    at = _list_start(text)
    if at is None:
        return None
    items: list[Any] = []
    for kind, start, value in _walk_list(text, at):
        if kind == "item":
            items.append(value)
        elif kind == "deep":
            return items, start, "nested too deeply to parse"
        else:
            return items, start, value
    return items, None, ""


def _top_level_items(text: str) -> list[str] | None:
    """The texts of the submissions list's elements (the document itself a list, or the list under
    one of the export keys), cut without parsing; None when there is no such list."""
    depth, in_string, escaped = 0, False, False
    key: str | None = None
    list_depth: int | None = None
    items: list[str] = []
    start = -1
    for i, ch in enumerate(text):
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
                if depth == 1 and list_depth is None and text[i + 1 :].lstrip().startswith(":"):
                    key = text[start + 1 : i]
            continue
        if ch == '"':
            in_string = True
            start = i if depth == 1 and list_depth is None else start
        elif ch in "[{":
            depth += 1
            if (
                list_depth is None
                and ch == "["
                and (depth == 1 or (depth == 2 and key in _LIST_KEYS))
            ):
                list_depth, start = depth, i + 1
        elif ch in "]}":
            if list_depth is not None and depth == list_depth:
                items.append(text[start:i])
                return [t for t in items if t.strip()]
            depth -= 1
        elif ch == "," and list_depth is not None and depth == list_depth:
            items.append(text[start:i])
            start = i + 1
    return None


_LIST_KEYS = ("submissions", "items", "results", "data", "responses")


def _one_by_one(
    source: str, raw: bytes, fallback: datetime, fpath: str
) -> list[RawRecord | ExtractReject]:
    text = raw.decode("utf-8", "replace")
    parts = _top_level_items(text)
    if parts is None:
        msg = "nested too deeply to parse, and no list of submissions found"
        return [_reject(source, fpath, "malformed_json", msg, text[:4000])]
    out: list[RawRecord | ExtractReject] = []
    for i, part in enumerate(parts):
        where = f"{fpath}#{i}"
        try:
            out.append(submission_record(source, json.loads(part), fallback, where))
        except (ValueError, RecursionError) as exc:
            msg = "nested too deeply to parse" if isinstance(exc, RecursionError) else str(exc)
            out.append(_reject(source, where, "malformed_json", msg, part[:4000]))
    return out


def iter_spool(source: str, path: str, cursor: dict[str, Any] | None) -> Iterator[RawBatch]:
    """Lines appended by the webhook receiver, from the byte offset the cursor holds per file.

    Only complete lines are read, so a line being written while we read waits for the next run.
    """
    files = (
        sorted(os.path.join(path, n) for n in os.listdir(path) if n.endswith(".jsonl"))
        if os.path.isdir(path)
        else [path]
    )
    offsets: dict[str, int] = dict((cursor or {}).get("offsets", {}))
    for fpath in files:
        name = os.path.basename(fpath)
        start = int(offsets.get(name, 0))
        if os.path.getsize(fpath) < start:
            start = 0  # the file was replaced: read it again, landing is idempotent
        with open(fpath, "rb") as fh:
            fh.seek(start)
            data = fh.read()
        end = data.rfind(b"\n") + 1
        if end == 0:
            continue
        items: list[RawRecord | ExtractReject] = []
        pos = start
        for line in data[:end].splitlines(keepends=True):
            where = f"{name}@{pos}"
            pos += len(line)
            if not line.strip():
                continue
            try:
                entry = json.loads(line)
                sub = entry["submission"]
                received = parse_time(entry.get("received_at")) or file_mtime(fpath)
            except (ValueError, KeyError, TypeError, UnicodeDecodeError, RecursionError) as exc:
                text = line.decode("utf-8", "replace")
                items.append(_reject(source, where, "malformed_spool_line", str(exc), text))
                continue
            items.append(submission_record(source, sub, received, where))
        offsets[name] = start + end
        records, rejects = _split(items)
        yield RawBatch(records=records, cursor={"offsets": dict(offsets)}, rejects=rejects)


# --- provider APIs over HTTP ---------------------------------------------------------------


@dataclass(frozen=True)
class ApiSpec:
    """Where a provider keeps things; the presets fill it from the providers' documented shapes."""

    url: str
    records_path: str | None
    id_field: str
    time_field: str | None
    paginator: Paginator
    ascending: bool  # records come oldest first, so the cursor may move with every page
    params: Mapping[str, Any] = field(default_factory=dict)


# The providers' documented limits, used when a source sets none of its own. Typeform: 2 requests
# a second per account (Create and Responses APIs). HubSpot: 100 requests per 10 seconds for a
# private app on Free and Starter (190 on Professional and Enterprise: set `rate_limit` to use it).
PRESET_RATE_LIMITS: Mapping[str, RateLimit] = {
    "typeform": RateLimit(per_second=2.0),
    "hubspot": RateLimit(per_second=10.0),
}


def preset_rate_limit(preset: str | None) -> RateLimit | None:
    """The documented limit of a provider preset; None for generic APIs and files."""
    return PRESET_RATE_LIMITS.get(preset or "")


def _typeform_token(page: Any) -> Any:
    items = dig(page, "items")
    # `after` is exclusive and orders by processing time, which lets us page without repeats
    return items[-1].get("token") if isinstance(items, list) and items else None


def _iso_seconds(dt: datetime) -> str:
    return dt.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S")


def api_spec(
    preset: str,
    url: str,
    *,
    since: datetime | None,
    until: datetime | None,
    page_size: int | None = None,
    records_path: str | None = None,
    id_field: str | None = None,
    time_field: str | None = None,
    since_param: str | None = None,
    next_token_path: str | None = None,
    next_token_param: str | None = None,
    next_link_path: str | None = None,
    page_param: str | None = None,
    params: Mapping[str, str] | None = None,
) -> ApiSpec:
    """The request plan for one preset: typeform, hubspot or generic."""
    if preset == "typeform":
        # GET /forms/{id}/responses: items[], token, submitted_at; since/until to the second
        q: dict[str, Any] = {"page_size": page_size or 1000, **(params or {})}
        if since:
            q["since"] = _iso_seconds(since)
        if until:
            q["until"] = _iso_seconds(until)
        pager = TokenPaginator(url, q, "after", token_of=_typeform_token)
        return ApiSpec(url, "items", "token", "submitted_at", pager, ascending=True)
    if preset == "hubspot":
        # GET /form-integrations/v1/submissions/forms/{guid}: newest first, no time filter
        q = {"limit": min(page_size or 50, 50), **(params or {})}
        pager = TokenPaginator(url, q, "after", token_path="paging.next.after")
        return ApiSpec(url, "results", "conversionId", "submittedAt", pager, ascending=False)
    q = dict(params or {})
    if since and since_param:
        q[since_param] = since.astimezone(UTC).isoformat().replace("+00:00", "Z")
    pg: Paginator
    if next_link_path:
        pg = NextLinkPaginator(url, q, next_link_path)
    elif next_token_path:
        pg = TokenPaginator(url, q, next_token_param or "page_token", token_path=next_token_path)
    elif page_param:
        pg = PageNumberPaginator(url, q, records_path, page_param, page_size or 100)
    else:
        pg = TokenPaginator(url, q, "unused", token_of=lambda _page: None)
    return ApiSpec(url, records_path, id_field or "id", time_field, pg, ascending=bool(since_param))


def _api_record(
    source: str, spec: ApiSpec, item: Any, where: str, now: datetime
) -> RawRecord | ExtractReject:
    if not isinstance(item, dict):
        return _reject(source, where, "not_an_object", "a submission must be a JSON object", item)
    rid = dig(item, spec.id_field)
    when = parse_time(dig(item, spec.time_field)) if spec.time_field else None
    if spec.time_field and when is None:
        return _reject(source, where, "no_submission_time", f"no valid {spec.time_field}", item)
    if rid in (None, ""):
        # HubSpot documents conversionId but older submissions lack it: the content is the id
        if spec.time_field is None:
            return _reject(source, where, "no_submission_id", f"no {spec.id_field}", item)
        body = json.dumps(item, sort_keys=True, ensure_ascii=False, default=str)
        rid = f"sha256:{content_hash(body)[:32]}"
    return RawRecord(source, "webform", str(rid), when or now, item)


def iter_webform_api(
    source: str,
    client: HttpClient,
    spec_for: Any,
    cursor: dict[str, Any] | None,
    *,
    lag: timedelta = timedelta(minutes=30),
    start: datetime | None = None,
    end: datetime | None = None,
    max_pages: int = 1000,
    now: datetime | None = None,
) -> Iterator[RawBatch]:
    """Submissions since the cursor's time minus the lag window, one batch per page.

    `spec_for(since, until)` gives the request plan. The lag re-reads a stretch already seen, so
    a submission committed late is still found; landing is idempotent on the record id.
    A page that is not JSON, a repeated page token or an exhausted retry ends the run of this
    source with an extract reject; what came before it is landed and the cursor does not pass it.
    """
    now = now or datetime.now(UTC)
    done_until = parse_time((cursor or {}).get("submitted_until"))
    since = start or (done_until - lag if done_until else None)
    spec: ApiSpec = spec_for(since, end)
    high = done_until
    pending: list[tuple[list[RawRecord], list[ExtractReject]]] = []
    pages = iter_pages(client, spec.paginator, max_pages=max_pages)
    failed: ExtractReject | None = None
    n = 0
    while True:
        try:
            page, _params = next(pages)
        except StopIteration:
            break
        except (HttpError, PaginationError) as exc:
            if isinstance(exc, HttpError) and exc.status is not None and n == 0:
                raise  # refused outright (bad token, wrong form id): a config problem, say so
            code = "pagination" if isinstance(exc, PaginationError) else "http_error"
            failed = _reject(source, f"{spec.url}#page{n + 1}", code, str(exc), "")
            break
        n += 1
        items = dig(page, spec.records_path)
        if not isinstance(items, list):
            msg = f"page {n} has no list at {spec.records_path!r}"
            failed = _reject(source, f"{spec.url}#page{n}", "malformed_page", msg, page)
            break
        out = [
            _api_record(source, spec, it, f"{spec.url}#page{n}.{i}", now)
            for i, it in enumerate(items)
        ]
        records, rejects = _split(out)
        older = [r for r in records if since and r.received_at < since]
        records = [r for r in records if r not in older and (end is None or r.received_at < end)]
        for r in records:
            high = r.received_at if high is None or r.received_at > high else high
        if spec.ascending:
            yield RawBatch(records, _cursor(cursor, high), rejects)
        else:
            pending.append((records, rejects))
        if older and not spec.ascending:
            break  # newest-first API: everything after this page is older still
    # a newest-first API moves the cursor only once every page has been landed
    final = high if failed is None else done_until
    for i, (records, rejects) in enumerate(pending):
        last = i == len(pending) - 1
        yield RawBatch(records, _cursor(cursor, final if last else done_until), rejects)
    if failed is not None:
        # what came before the failure is landed; the cursor stays short of the failed page
        yield RawBatch([], _cursor(cursor, high if spec.ascending else done_until), [failed])


def _cursor(old: dict[str, Any] | None, high: datetime | None) -> dict[str, Any]:
    out = dict(old or {})
    if high is not None:
        out["submitted_until"] = high.isoformat()
    return out
