"""Contact fields from a decoded mail: the submitter of a form notification, a vCard, or the sender.

Pure: it reads the payload the email connector built (headers, text body, or one vCard entry)
and returns canonical fields for normalize. In order of trust:
1. a vCard entry (`payload["vcard"]`): the card's own fields;
2. a web-form notification body with "Name: … / E-mail: …" lines (English, Turkish, German and
   the other languages the header aliases know): the submitter, not whoever sent the mail;
3. otherwise the sender (Reply-To before From), with phone, title, company and website taken
   from the signature block.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from transforms.fields import canonical_field, header_key, map_fields
from transforms.vcard import vcard_fields

MAX_MESSAGE_CHARS = 4000
_LINE = re.compile(r"^\s*[*•-]?\s*([^\n:\t]{1,50}?)\s*[:\t]\s*(.*?)\s*$")
_EMAIL = re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+")
_URL = re.compile(
    r"\b((?:https?://)?(?:www\.)[\w.-]+\.[a-z]{2,}(?:/\S*)?|https?://[\w.-]+\.[a-z]{2,}(?:/\S*)?)",
    re.I,
)
_PHONE_LABELED = re.compile(
    r"(?:tel(?:efon)?|phone|gsm|mobile?|mobil|cep|handy|fon|t|m)\s*\.?\s*[:.]?\s*(\+?[\d(][\d ()./-]{6,}\d)",
    re.I,
)
_PHONE_BARE = re.compile(r"^\s*(\+\d[\d ()./-]{7,}\d)\s*$")
_CLOSINGS = re.compile(
    r"^\s*(best( regards)?|kind regards|regards|many thanks|thanks|thank you|cheers|sincerely|"
    r"saygılarımla|saygilarimla|saygılarımızla|iyi çalışmalar|iyi calismalar|teşekkürler|"
    r"mit freundlichen grüßen|mit freundlichen gruessen|viele grüße|beste grüße|mfg|"
    r"cordialement|bien cordialement|saludos|atentamente|un saludo)\b[ ,.!]*$",
    re.I,
)
_TITLE_WORDS = re.compile(
    r"\b(manager|director|head|ceo|cto|cfo|coo|founder|owner|engineer|specialist|consultant|"
    r"officer|lead|executive|president|partner|buyer|purchasing|assistant|sales|"
    r"müdür|mudur|müdürü|uzman|sorumlu|yönetici|yonetici|genel müdür|satın alma|mühendis|"
    r"leiter|leiterin|geschäftsführer|geschaftsfuhrer|einkauf|vertrieb|inhaber|"
    r"directeur|responsable|gérant|gerente|jefe|director[a]?)\b",
    re.I,
)
_COMPANY_WORDS = re.compile(
    r"(\b(gmbh|ag|kg|ltd|llc|inc|corp|plc|s\.?a\.?|s\.?l\.?|s\.?r\.?l\.?|sarl|bv|holding|group|"
    r"sanayi|ticaret|san\.|tic\.|şti|sti)\b|a\.ş\.|a\.s\.)",
    re.I,
)
# a notification needs at least these to name a submitter
_FORM_NEEDS = ("email",)


def _lines(body: str) -> list[str]:
    """The body without quoted replies (lines after "On … wrote:" or starting with ">")."""
    out: list[str] = []
    for line in body.replace("\r\n", "\n").split("\n"):
        if line.lstrip().startswith(">"):
            continue
        if re.match(
            r"^\s*(on .{4,80} wrote:|am .{4,80} schrieb .*:|-----\s*original message)", line, re.I
        ):
            break
        out.append(line.rstrip())
    return out


def form_fields(body: str) -> dict[str, Any]:
    """The submitter of a web-form notification: "Label: value" lines whose labels are known fields.

    A label alone on its line with the value on the next line (HTML tables turned to text) counts
    too. Returns {} when no known label carries an email address.
    """
    pairs: dict[str, Any] = {}
    lines = _lines(body)
    for i, line in enumerate(lines):
        m = _LINE.match(line)
        if m:
            label, value = m.group(1), m.group(2)
        elif canonical_field(line.strip()) and i + 1 < len(lines):
            label, value = line.strip(), lines[i + 1].strip()
        else:
            continue
        if value and canonical_field(label) and label not in pairs:
            pairs[label] = value
    fields = map_fields(pairs)
    email = _EMAIL.search(str(fields.get("email") or ""))
    if not all(fields.get(k) for k in _FORM_NEEDS) or not email:
        return {}
    fields["email"] = email.group(0)
    return fields


def _signature_block(lines: list[str]) -> list[str]:
    for i in range(len(lines) - 1, -1, -1):
        if lines[i].strip() in {"--", "-- ", "—", "__"} or _CLOSINGS.match(lines[i]):
            return [ln.strip() for ln in lines[i + 1 : i + 12] if ln.strip()]
    return [ln.strip() for ln in lines[-8:] if ln.strip()]


def signature_fields(body: str, sender_name: str | None) -> dict[str, Any]:
    """Phone, job title, company and website from the block under the closing or the "-- " line."""
    block = _signature_block(_lines(body))
    out: dict[str, Any] = {}
    name_key = header_key(sender_name or "")
    rest: list[str] = []
    for line in block:
        phone = _PHONE_LABELED.search(line) or _PHONE_BARE.match(line)
        if phone:
            out.setdefault("phone", phone.group(1).strip())
            continue
        url = _URL.search(line)
        if url and not _EMAIL.search(line):
            out.setdefault("website", url.group(1))
            continue
        if _EMAIL.search(line) or (name_key and header_key(line) == name_key):
            continue
        if len(line) <= 80:
            rest.append(line)
    for line in rest:
        if "company" not in out and _COMPANY_WORDS.search(line):
            out["company"] = line
        elif "job_title" not in out and _TITLE_WORDS.search(line):
            out["job_title"] = line.split("|")[0].strip(" ,")
    return out


def contact_fields(payload: Mapping[str, Any]) -> dict[str, Any]:
    """Canonical contact fields for one email raw record (see the module docstring)."""
    if isinstance(payload.get("vcard"), str):
        return vcard_fields(payload["vcard"])
    body = str(payload.get("body") or "")
    subject = str(payload.get("subject") or "")
    form = form_fields(body)
    if form:
        form.setdefault("message", body[:MAX_MESSAGE_CHARS] or subject)
        return form
    senders = [
        s
        for s in [*(payload.get("reply_to") or []), *(payload.get("from") or [])]
        if isinstance(s, Mapping)
    ]
    out: dict[str, Any] = {}
    if senders:
        out["email"] = senders[0].get("email")
        name = next((s.get("name") for s in senders if s.get("name")), None)
        if name and "@" not in name:
            out["full_name"] = name
    out.update(signature_fields(body, out.get("full_name")))
    out["message"] = body[:MAX_MESSAGE_CHARS] or subject
    return out
