"""vCard sources: .vcf files (2.1, 3.0, 4.0) from a file, folder or glob, one raw record per card.

A file is read as a stream, line by line, never whole: an address book with a multi-megabyte
PHOTO costs a line buffer, not the photo. Binary properties (PHOTO, LOGO, SOUND, KEY) are
skipped as they stream past; the card keeps a note of what was skipped and how big it was.
A card's payload is its text as written (folded lines, quoted-printable, CHARSET= and all,
decoded from the file's bytes to text), so normalize reads it the way it reads a vCard attached
to a mail. A card's id is file + a hash of its text: re-reading lands nothing new and an edited
card lands as one new record. Files are incremental by fingerprint, like sheets.

Why not `vobject`: it assembles each logical line whole (a photo's megabytes in one string),
takes text rather than bytes (no per-property CHARSET for 8-bit 2.1 files), and one malformed
card raises out of its generator, which ends the rest of the file.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import IO, Any

from connectors.base import ExtractReject, RawBatch, RawRecord, expand_paths, file_fingerprint
from connectors.spreadsheet import SETTLE_SECONDS, first_landed

SUFFIXES = (".vcf", ".vcard")
LINE_CHUNK = 64 * 1024  # the most of one physical line held at once
MAX_CARD_CHARS = 4 * 1024 * 1024  # a card's text beyond this (binaries not counted) is a reject
CHUNK_CARDS = 5_000  # records per batch
BINARY_PROPERTIES = frozenset({"PHOTO", "LOGO", "SOUND", "KEY"})
_TEXT_PROPERTIES = frozenset(
    "FN N ORG TITLE ROLE NOTE ADR LABEL NICKNAME EMAIL TEL URL BDAY REV CATEGORIES".split()
)
# letters only Windows-1254 / ISO-8859-9 put at these bytes (Ğ ğ İ ı Ş ş)
_TURKISH_BYTES = re.compile(rb"[\xd0\xf0\xdd\xfd\xde\xfe]")
_CHARSET = re.compile(rb";\s*CHARSET=\"?([A-Za-z0-9_.:-]+)", re.I)
_REV = re.compile(
    r"^(\d{4})-?(\d{2})-?(\d{2})(?:T(\d{2}):?(\d{2}):?(\d{2})?(?:[.,]\d+)?(Z|[+-]\d{2}:?\d{2})?)?$"
)


def parse_rev(value: str) -> datetime | None:
    """A REV timestamp (19951031T222710Z, 2024-03-05T10:00:00+01:00, 2024-03-05) as UTC."""
    m = _REV.match(value.strip())
    if not m:
        return None
    y, mo, d, hh, mm, ss, zone = m.groups()
    try:
        dt = datetime(int(y), int(mo), int(d), int(hh or 0), int(mm or 0), int(ss or 0))
    except ValueError:
        return None
    if zone and zone != "Z":
        sign = 1 if zone[0] == "+" else -1
        digits = zone[1:].replace(":", "")
        offset = sign * (int(digits[:2]) * 60 + int(digits[2:]))
        return dt.replace(tzinfo=UTC) - timedelta(minutes=offset)
    return dt.replace(tzinfo=UTC)


def _decode(line: bytes, charset: str | None) -> str:
    """A line's text: UTF-8 when it is, else the property's CHARSET, else the Windows code page."""
    try:
        return line.decode("utf-8")
    except UnicodeDecodeError:
        pass
    if charset:
        try:
            return line.decode(charset, "replace")
        except LookupError:
            pass
    return line.decode("cp1254" if _TURKISH_BYTES.search(line) else "cp1252", "replace")


@dataclass
class _Card:
    """The card being read: its lines as text, what was skipped, and where it started."""

    start_line: int
    lines: list[str] = field(default_factory=list)
    chars: int = 0
    skipped: Counter[str] = field(default_factory=Counter)
    error: tuple[str, str] | None = None  # (code, message) once the card cannot be kept
    version: str | None = None
    rev: str | None = None

    def add(self, text: str) -> None:
        if self.error:
            return
        self.chars += len(text)
        if self.chars > MAX_CARD_CHARS:
            self.error = ("card_too_large", f"card text over {MAX_CARD_CHARS} characters")
            self.lines = []
            return
        self.lines.append(text)

    def extend_last(self, text: str) -> None:
        if self.error or not self.lines:
            return
        self.chars += len(text)
        if self.chars > MAX_CARD_CHARS:
            self.error = ("card_too_large", f"card text over {MAX_CARD_CHARS} characters")
            self.lines = []
            return
        self.lines[-1] += text


@dataclass(frozen=True, slots=True)
class ParsedCard:
    """One card as read from the file: its text, or the reason it cannot be kept."""

    index: int
    line: int
    text: str
    version: str | None
    rev: str | None
    skipped: dict[str, int]
    error: tuple[str, str] | None


def _head(raw: bytes) -> tuple[str, str, bytes]:
    """(group-less upper-case property name, upper-case head text, head bytes) of a line."""
    colon = raw.find(b":")
    head = raw if colon < 0 else raw[:colon]
    text = head.decode("latin-1").upper()
    name = text.split(";", 1)[0].strip().rsplit(".", 1)[-1]
    return name, text, head


def _lines(fh: IO[bytes], digest: Any) -> Iterator[tuple[bytes, bool]]:
    """(piece, complete) of each physical line; a line longer than LINE_CHUNK comes in pieces."""
    while True:
        piece = fh.readline(LINE_CHUNK)
        if not piece:
            return
        digest.update(piece)
        yield piece, piece.endswith(b"\n")


def _utf16_as_utf8(fh: IO[bytes], digest: Any) -> Iterator[tuple[bytes, bool]]:
    """The lines of a UTF-16 file (some Windows tools write .vcf so) as UTF-8 pieces."""

    class _Hashing(io.RawIOBase):
        def readable(self) -> bool:
            return True

        def readinto(self, b: Any) -> int:
            data = fh.read(len(b))
            digest.update(data)
            b[: len(data)] = data
            return len(data)

    text = io.TextIOWrapper(io.BufferedReader(_Hashing()), encoding="utf-16", errors="replace")
    while True:
        piece = text.readline(LINE_CHUNK)
        if not piece:
            return
        yield piece.encode("utf-8"), piece.endswith("\n")


def parse_cards(fh: IO[bytes], digest: Any = None) -> Iterator[ParsedCard | tuple[int, str]]:
    """The cards of a vCard stream in order; text outside any card comes as (line, text).

    Line kinds (RFC 2425/6350, vCard 2.1): a line starting with a space or tab continues the
    previous one; after a quoted-printable line ending in "=", the next line continues it
    whatever it starts with; a 2.1 base64 value runs on until a blank line. A BEGIN:VCARD
    inside a card that was never ended closes the old card as unterminated.
    """
    digest = digest if digest is not None else hashlib.sha256()
    start = fh.read(2)
    fh.seek(0)
    lines = (
        _utf16_as_utf8(fh, digest) if start in (b"\xff\xfe", b"\xfe\xff") else _lines(fh, digest)
    )
    card: _Card | None = None
    index = 0
    lineno = 0
    partial = False  # the previous piece did not end its line
    skipping = False  # inside a binary property
    drop_piece = False  # the current long line is being skipped
    qp_open = False  # the last line was quoted-printable and ended with "="
    charset: str | None = None
    nested = 0  # an AGENT's embedded card
    skip_name = ""  # the binary property being skipped

    def finish(c: _Card, error: tuple[str, str] | None = None) -> ParsedCard:
        nonlocal index
        index += 1
        return ParsedCard(
            index,
            c.start_line,
            "\r\n".join(c.lines) + "\r\n" if not (error or c.error) else "",
            c.version,
            c.rev,
            dict(c.skipped),
            error or c.error,
        )

    for piece, complete in lines:
        if partial:
            # the rest of a long line: skipped, or added to the line it belongs to
            partial = not complete
            if card is not None and skipping:
                card.skipped[skip_name] += len(piece)
            elif card is not None and not drop_piece:
                card.extend_last(_decode(piece.rstrip(b"\r\n"), charset))
            continue
        lineno += 1
        partial = not complete
        if lineno == 1 and piece.startswith(b"\xef\xbb\xbf"):
            piece = piece[3:]
        raw = piece.rstrip(b"\r\n")
        drop_piece = False
        if card is None:
            if raw.strip().upper() == b"BEGIN:VCARD":
                card, skipping, qp_open, nested = _Card(lineno), False, False, 0
            elif raw.strip():
                drop_piece = True
                yield lineno, _decode(raw[:200], None)
            continue
        if nested:
            upper = raw.strip().upper()
            nested += upper == b"BEGIN:VCARD"
            nested -= upper == b"END:VCARD"
            continue
        if skipping:
            # a binary value: folded lines, 2.1's unindented base64 lines, the blank line after
            if not raw.strip() or raw[:1] in b" \t" or b":" not in raw:
                card.skipped[skip_name] += len(piece)
                drop_piece = True
                continue
            skipping = False
        if qp_open and raw.strip().upper() not in (b"END:VCARD", b"BEGIN:VCARD"):
            card.extend_last("\r\n" + _decode(raw, charset))
            qp_open = raw.endswith(b"=")
            continue
        if not raw.strip():
            continue
        if raw[:1] in b" \t":
            card.extend_last("\r\n" + _decode(raw, charset))
            continue
        name, head_text, head = _head(raw)
        if b":" not in raw:
            if not card.error:
                sample = _decode(raw[:80], None)
                card.error = ("vcard_malformed", f"line {lineno} is not a property: {sample!r}")
            continue
        value_upper = raw[raw.find(b":") + 1 :].strip().upper()
        if name == "END" and value_upper == b"VCARD":
            yield finish(card)
            card = None
            continue
        if name == "BEGIN" and value_upper == b"VCARD":
            msg = f"card from line {card.start_line} has no END:VCARD before line {lineno}"
            yield finish(card, ("vcard_unterminated", msg))
            card, skipping, qp_open = _Card(lineno), False, False
            continue
        if name == "AGENT" and value_upper.startswith(b"BEGIN:VCARD"):
            nested = 1
            continue
        encoding_b = re.search(r"ENCODING=(B|BASE64)\b|;BASE64\b", head_text) is not None
        if name in BINARY_PROPERTIES or (encoding_b and name not in _TEXT_PROPERTIES):
            skip_name = name
            card.skipped[name] += len(piece)
            skipping = drop_piece = True
            continue
        m = _CHARSET.search(head)
        charset = m.group(1).decode("ascii") if m else None
        text = _decode(raw, charset)
        card.add(text)
        if name == "VERSION":
            card.version = text.partition(":")[2].strip()
        elif name == "REV":
            card.rev = text.partition(":")[2].strip()
        qp_open = "QUOTED-PRINTABLE" in head_text and raw.endswith(b"=")
    if card is not None:
        msg = f"card from line {card.start_line} has no END:VCARD before the end of the file"
        yield finish(card, ("vcard_unterminated", msg))


def _settle(path: str, now: Callable[[], float] = time.time) -> None:
    age = now() - os.stat(path).st_mtime
    if 0 <= age < SETTLE_SECONDS:
        time.sleep(SETTLE_SECONDS - age)


def iter_vcard(
    source: str,
    path: str,
    cursor: dict[str, Any] | None,
    *,
    max_file_bytes: int = 512 * 1024 * 1024,
    chunk_cards: int = CHUNK_CARDS,
    now: datetime | None = None,
    landed: Mapping[str, str] | None = None,
) -> Iterator[RawBatch]:
    """Batches of up to `chunk_cards` records per changed .vcf file; unchanged files are skipped.

    A card's received time is its REV, else when the file's content was first landed: `landed`
    (content fingerprint → ISO time; default: the cursor's), else `now`, which the cursor then
    keeps. Never the file's modification time, so a copy, clone or touch moves no date (as for
    sheets). Only a file's last batch carries its new fingerprint, so a run stopped halfway reads
    it again and lands only what is missing; a file whose bytes changed during the read is a
    `file_changing` reject and its cursor entry stays, so the next run reads it again.
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
            mark = f"size:{size}"
            if seen.get(fpath) != mark:
                seen[fpath] = mark
                msg = f"file is {size} bytes, limit {max_file_bytes}"
                reject = ExtractReject(source, fname, "file_too_large", msg, "")
                yield RawBatch([], state(), [reject])
            continue
        _settle(fpath)
        fp = file_fingerprint(fpath)
        if seen.get(fpath) == fp:
            continue
        # kept by the first batch already: a read stopped halfway dates the rest the same
        firsts.setdefault(fp, stamp.isoformat())
        first = datetime.fromisoformat(firsts[fp])
        before = state()
        records: list[RawRecord] = []
        rejects: list[ExtractReject] = []
        ids: Counter[str] = Counter()
        stray: list[tuple[int, str]] = []
        digest = hashlib.sha256()
        try:
            with open(fpath, "rb") as fh:
                for item in parse_cards(fh, digest):
                    if isinstance(item, tuple):
                        stray.append(item)
                        continue
                    where = f"{fname}:card{item.index}:line{item.line}"
                    if item.error:
                        rejects.append(ExtractReject(source, where, *item.error, ""))
                    else:
                        records.append(_record(source, fname, item, first, ids))
                    if len(records) >= chunk_cards:
                        yield RawBatch(records, before, rejects)
                        records, rejects = [], []
        except OSError as exc:
            msg = f"{type(exc).__name__}: {exc}"[:500]
            yield RawBatch(
                records,
                before,
                [*rejects, ExtractReject(source, fname, "unreadable_file", msg, "")],
            )
            continue
        if stray:
            first_line, first_text = stray[0]
            msg = f"{len(stray)} line(s) outside any BEGIN:VCARD … END:VCARD, first at line {first_line}"
            rejects.append(
                ExtractReject(
                    source, f"{fname}:line{first_line}", "vcard_stray_text", msg, first_text
                )
            )
        if digest.hexdigest() != fp:
            msg = f"{fname} changed while it was read"
            rejects.append(ExtractReject(source, fname, "file_changing", msg, ""))
            yield RawBatch(records, before, rejects)
            continue
        seen[fpath] = fp
        yield RawBatch(records, state(), rejects)


def _record(
    source: str, fname: str, card: ParsedCard, first: datetime, ids: Counter[str]
) -> RawRecord:
    key = hashlib.sha256(card.text.encode("utf-8", "surrogatepass")).hexdigest()[:20]
    ids[key] += 1
    rid = f"{fname}:{key}" + (f"#{ids[key]}" if ids[key] > 1 else "")
    payload: dict[str, Any] = {"vcard": card.text, "file": fname, "card": card.index}
    if card.version:
        payload["version"] = card.version
    if card.skipped:
        payload["skipped"] = card.skipped  # property → bytes left out (photos, logos, keys)
    received = (parse_rev(card.rev) if card.rev else None) or first
    return RawRecord(source, "vcard", rid, received, payload)
