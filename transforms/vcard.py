"""One vCard's text (2.1, 3.0 or 4.0) → canonical contact fields; pure, whoever read the card.

Handles what real address books write: folded lines (RFC 6350 §3.2), 2.1 quoted-printable
values with soft line breaks and their CHARSET=, base64 text values, 2.1 bare parameters
(`TEL;WORK;VOICE`), 3.0 `TYPE=` lists, 4.0 `PREF=1` and `tel:` URIs, grouped properties
(`item1.EMAIL` beside `item1.X-ABLabel`), and the escapes `\\n \\, \\; \\: \\\\`. The preferred
email and phone (PREF, else the first) are the contact's; the others come back as
`other_emails` / `other_phones`. REV is the card's own date (`received_at`).
"""

from __future__ import annotations

import base64
import binascii
import quopri
import re
from dataclasses import dataclass
from typing import Any

_ESCAPE = re.compile(r"\\(.)", re.S)
_UNESCAPED_SEMI = re.compile(r"(?<!\\);")


@dataclass(frozen=True, slots=True)
class Property:
    """One logical line of a card: group, upper-case name, parameters, decoded value."""

    group: str | None
    name: str
    params: dict[str, list[str]]
    value: str

    @property
    def types(self) -> set[str]:
        return {t.upper() for t in self.params.get("TYPE", [])}

    @property
    def preferred(self) -> bool:
        return "PREF" in self.types or bool(self.params.get("PREF"))


def unfold(text: str) -> list[str]:
    """Logical lines: folded continuations joined, quoted-printable soft breaks joined."""
    out: list[str] = []
    qp_open = False
    for line in text.replace("\r\n", "\n").replace("\r", "\n").split("\n"):
        if qp_open and out:
            out[-1] = out[-1][:-1] + line.lstrip(" \t")  # "=" + line break is a soft break
        elif line[:1] in (" ", "\t") and out:
            out[-1] += line[1:]
        elif line.strip():
            out.append(line)
        else:
            continue
        last = out[-1]
        qp_open = last.endswith("=") and "QUOTED-PRINTABLE" in last.partition(":")[0].upper()
    return out


def _split_head(line: str) -> tuple[str, str] | None:
    """(head, value) at the first colon outside a quoted parameter value."""
    quoted = False
    for i, c in enumerate(line):
        if c == '"':
            quoted = not quoted
        elif c == ":" and not quoted:
            return line[:i], line[i + 1 :]
    return None


def _params(parts: list[str]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for part in parts:
        key, eq, val = part.partition("=")
        if not eq:  # vCard 2.1: a bare type (WORK, CELL, PREF) or encoding (QUOTED-PRINTABLE)
            bare = key.strip().upper()
            if bare in {"QUOTED-PRINTABLE", "BASE64", "8BIT", "7BIT", "B"}:
                out.setdefault("ENCODING", []).append(bare)
            elif bare:
                out.setdefault("TYPE", []).append(bare)
            continue
        values = [v.strip().strip('"') for v in val.strip().strip('"').split(",")]
        out.setdefault(key.strip().upper(), []).extend(v for v in values if v)
    return out


def _decode_bytes(data: bytes, charset: str | None) -> str:
    for enc in (charset, "utf-8"):
        if not enc:
            continue
        try:
            return data.decode(enc)
        except (LookupError, UnicodeDecodeError):
            continue
    return data.decode("cp1252", "replace")


def parse_property(line: str) -> Property | None:
    """A logical line as a property with its value decoded (quoted-printable, base64)."""
    split = _split_head(line)
    if split is None:
        return None
    head, value = split
    parts = head.split(";")
    group, _, name = parts[0].strip().rpartition(".")
    params = _params(parts[1:])
    encoding = {e.upper() for e in params.get("ENCODING", [])}
    charset = next(iter(params.get("CHARSET") or []), None)
    if "QUOTED-PRINTABLE" in encoding:
        value = _decode_bytes(quopri.decodestring(value.encode("utf-8")), charset)
    elif encoding & {"B", "BASE64"}:
        try:
            value = _decode_bytes(base64.b64decode("".join(value.split()), validate=False), charset)
        except (binascii.Error, ValueError):
            return None
    return Property(group or None, name.strip().upper(), params, value)


def unescape(text: str) -> str:
    return _ESCAPE.sub(lambda m: "\n" if m.group(1) in "nN" else m.group(1), text).strip()


def components(value: str) -> list[str]:
    """A structured value's parts (N, ADR, ORG), split on unescaped semicolons."""
    return [unescape(p) for p in _UNESCAPED_SEMI.split(value)]


def _one_line(text: str) -> str:
    return ", ".join(p.strip() for p in text.splitlines() if p.strip())


_BDAY = re.compile(r"^(\d{4})-?(\d{2})-?(\d{2})")
_REV = re.compile(
    r"^(\d{4})-?(\d{2})-?(\d{2})(?:T(\d{2}):?(\d{2}):?(\d{2})?[^Z+-]*(Z|[+-]\d{2}:?\d{2})?)?"
)


def _iso_date(value: str) -> str | None:
    """BDAY as ISO (19850412 → 1985-04-12); a birthday without a year (--0412) says no date."""
    m = _BDAY.match(value.strip())
    return f"{m.group(1)}-{m.group(2)}-{m.group(3)}" if m else None


def _iso_timestamp(value: str) -> str | None:
    """REV as ISO 8601 (20240305T100000Z → 2024-03-05T10:00:00+00:00)."""
    m = _REV.match(value.strip())
    if not m:
        return None
    y, mo, d, hh, mm, ss, zone = m.groups()
    if hh is None:
        return f"{y}-{mo}-{d}"
    offset = "+00:00" if zone in (None, "Z") else f"{zone[:3]}:{zone[-2:]}"
    return f"{y}-{mo}-{d}T{hh}:{mm}:{ss or '00'}{offset}"


def _ordered(props: list[Property]) -> list[str]:
    """Values with the preferred ones first, then in the card's order, without repeats."""
    out: list[str] = []
    for p in sorted(props, key=lambda p: not p.preferred):
        value = unescape(p.value)
        if p.name == "TEL":
            value = re.sub(r"^tel:", "", value, flags=re.I).replace(";ext=", " ext ")
        elif p.name == "EMAIL":
            value = re.sub(r"^mailto:", "", value, flags=re.I)
        if value and value not in out:
            out.append(value)
    return out


def vcard_fields(text: str) -> dict[str, Any]:
    """One card's text → canonical fields (see the module docstring)."""
    props = [p for p in map(parse_property, unfold(text)) if p is not None]
    by_name: dict[str, list[Property]] = {}
    for p in props:
        by_name.setdefault(p.name, []).append(p)

    def first(name: str) -> Property | None:
        found = by_name.get(name)
        return sorted(found, key=lambda p: not p.preferred)[0] if found else None

    out: dict[str, Any] = {}
    if (fn := first("FN")) and unescape(fn.value):
        out["full_name"] = _one_line(unescape(fn.value))
    if n := first("N"):
        parts = [*components(n.value), "", ""]
        if parts[0]:
            out["last_name"] = parts[0]
        if parts[1]:
            out["first_name"] = parts[1]
    if (org := first("ORG")) and components(org.value)[0]:
        out["company"] = components(org.value)[0]
    title = first("TITLE") or first("ROLE")
    if title and unescape(title.value):
        out["job_title"] = _one_line(unescape(title.value))
    for name, key, others in (("EMAIL", "email", "other_emails"), ("TEL", "phone", "other_phones")):
        values = _ordered(by_name.get(name, []))
        if values:
            out[key] = values[0]
        if values[1:]:
            out[others] = values[1:]
    if adr := first("ADR"):
        parts = [*components(adr.value), *[""] * 7][:7]
        street = _one_line(", ".join(p for p in parts[1:3][::-1] if p))
        for key, value in zip(
            ("street", "city", "region", "postal_code", "country"),
            (street, *parts[3:7]),
            strict=True,
        ):
            if value:
                out[key] = _one_line(value)
    if (url := first("URL")) and unescape(url.value):
        out["website"] = unescape(url.value)
    if (bday := first("BDAY")) and (day := _iso_date(unescape(bday.value))):
        out["birth_date"] = day
    if (note := first("NOTE")) and unescape(note.value):
        out["message"] = unescape(note.value)
    if (rev := first("REV")) and (when := _iso_timestamp(unescape(rev.value))):
        out["received_at"] = when
    return out
