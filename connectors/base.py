"""What every connector yields: raw records with provenance, in batches, with their cursor."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
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
READ_FAILURES = frozenset({"http_error", "pagination", "malformed_page"})


@dataclass(frozen=True, slots=True)
class RawBatch:
    """A batch of records and the cursor that holds once they are landed."""

    records: list[RawRecord]
    cursor: dict[str, JSONValue]
    rejects: list[ExtractReject] = field(default_factory=list)
    skipped: dict[str, int] = field(default_factory=dict)


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
