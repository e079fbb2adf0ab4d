"""Web-form sources: JSON exports of form submissions, one raw record per submission."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

from connectors.base import ExtractReject, RawBatch, RawRecord, file_mtime, iter_changed_files

ID_KEYS = ("id", "submission_id", "response_id", "token", "conversionId")
TIME_KEYS = ("submitted_at", "submittedAt", "created_at", "timestamp", "date")


def _parse_time(value: Any, fallback: datetime) -> datetime:
    if isinstance(value, int | float):
        secs = value / 1000 if value > 1e11 else value
        return datetime.fromtimestamp(secs, tz=UTC)
    if isinstance(value, str):
        try:
            dt = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return fallback
        return dt.astimezone(UTC) if dt.tzinfo else dt.replace(tzinfo=UTC)
    return fallback


def _submissions(doc: Any) -> list[Any]:
    if isinstance(doc, list):
        return doc
    if isinstance(doc, dict):
        for key in ("submissions", "items", "results", "data", "responses"):
            if isinstance(doc.get(key), list):
                return list(doc[key])
    raise ValueError("no list of submissions found in the export")


def iter_webform_export(
    source: str, path: str, cursor: dict[str, Any] | None
) -> Iterator[RawBatch]:
    """Yield one batch per changed export file; a submission without an id is rejected."""
    for fpath, _fp, after in iter_changed_files([path], cursor):
        fallback = file_mtime(fpath)
        records: list[RawRecord] = []
        rejects: list[ExtractReject] = []
        with open(fpath, "rb") as fh:
            raw = fh.read()
        try:
            subs = _submissions(json.loads(raw))
        except ValueError as exc:
            rejects.append(
                ExtractReject(
                    source,
                    fpath,
                    "malformed_json",
                    str(exc)[:500],
                    raw[:4000].decode("utf-8", "replace"),
                )
            )
            yield RawBatch(records=[], cursor=after, rejects=rejects)
            continue
        for i, sub in enumerate(subs):
            sid = next((sub.get(k) for k in ID_KEYS if isinstance(sub, dict) and sub.get(k)), None)
            if not isinstance(sub, dict) or sid is None:
                rid = f"{fpath}#{i}"
                text = json.dumps(sub, ensure_ascii=False, default=str)[:4000]
                rejects.append(
                    ExtractReject(source, rid, "no_submission_id", "submission has no id", text)
                )
                continue
            when = next((sub[k] for k in TIME_KEYS if k in sub), None)
            records.append(RawRecord(source, "webform", str(sid), _parse_time(when, fallback), sub))
        yield RawBatch(records=records, cursor=after, rejects=rejects)
