"""Opportunity updates from the CRM, pure: export rows parsed, matched and turned into stage moves.

Three layouts, told apart by their header: a Salesforce opportunity report export (`Opportunity
ID`, `Opportunity Name`, `Stage`, `Amount`, `Opportunity Currency`, `Close Date`, `Won`,
`Closed`, `Last Modified Date`, a contact email column), a HubSpot deals export (`Record ID`,
`Deal Name`, `Deal Stage`, `Amount`, `Currency`, `Close Date`, `Last Modified Date`, the
associated contact's email) and a plain CSV (`opportunity_id` or `email`, `stage`, `amount`,
`currency`, `close_date`, `outcome` won/lost, optional `changed_at`). An update names
leadflow's opportunity id or the lead's email; it moves the stage (the catalogue's probability
comes with it), the amount, the currency and the close date. Rows that cannot be applied come
back as rejects with their reason. Records of the Salesforce REST query resource and of HubSpot's
deal search are read as rows of the same two layouts (`updates_from_salesforce`,
`updates_from_hubspot`).
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from transforms.normalize import normalize_email
from transforms.qualify import Stage, StageChange
from transforms.records import Reject

REJECT_STAGE = "outcome"

# header (lower-cased) → field, per layout; the first header found wins
_ALIASES: dict[str, dict[str, tuple[str, ...]]] = {
    "salesforce": {
        "record_id": ("opportunity id", "opportunity id (18)", "id"),
        "opportunity_ref": ("leadflow opportunity id", "external id", "opportunity id"),
        "email": ("contact: email", "primary contact email", "contact email", "email"),
        "stage": ("stage",),
        "amount": ("amount",),
        "currency": ("opportunity currency", "amount currency", "currency"),
        "close_date": ("close date",),
        "won": ("won",),
        "closed": ("closed",),
        "changed_at": ("last modified date", "last stage change date"),
    },
    "hubspot": {
        "record_id": ("record id", "deal id"),
        "opportunity_ref": ("leadflow opportunity id", "external id"),
        "email": (
            "associated contact email",
            "contact email",
            "email",
            "associated contact",
        ),
        "stage": ("deal stage",),
        "amount": ("amount",),
        "currency": ("currency", "deal currency code"),
        "close_date": ("close date",),
        "changed_at": ("last modified date", "last activity date"),
    },
    "plain": {
        "record_id": ("record_id", "id"),
        "opportunity_ref": ("opportunity_id",),
        "email": ("email",),
        "stage": ("stage",),
        "amount": ("amount",),
        "currency": ("currency",),
        "close_date": ("close_date",),
        "outcome": ("outcome", "won_lost", "won/lost"),
        "changed_at": ("changed_at",),
    },
}

# HubSpot's default sales pipeline onto the Salesforce-style catalogue: by label (exports) and by
# internal id (the API).
HUBSPOT_STAGES = {
    "appointment scheduled": "Qualification",
    "qualified to buy": "Needs Analysis",
    "presentation scheduled": "Value Proposition",
    "decision maker bought-in": "Id. Decision Makers",
    "contract sent": "Negotiation/Review",
    "closed won": "Closed Won",
    "closed lost": "Closed Lost",
    "appointmentscheduled": "Qualification",
    "qualifiedtobuy": "Needs Analysis",
    "presentationscheduled": "Value Proposition",
    "decisionmakerboughtin": "Id. Decision Makers",
    "contractsent": "Negotiation/Review",
    "closedwon": "Closed Won",
    "closedlost": "Closed Lost",
}

_EMAIL_IN = re.compile(r"[^\s<>()\"',;]+@[^\s<>()\"',;]+")
_TRUE = {"1", "true", "yes", "y", "won", "x"}
_FALSE = {"0", "false", "no", "n", "lost", ""}


@dataclass(frozen=True)
class OpportunityUpdate:
    source: str
    record_id: str
    line: int
    opportunity_ref: str | None
    email_key: str | None
    stage: str | None  # as the CRM names it
    outcome: str | None  # "won", "lost" or None (open)
    amount: Decimal | None
    currency: str | None
    close_date: date | None
    changed_at: datetime | None
    raw: str


@dataclass(frozen=True)
class OpportunityState:
    opportunity_id: str
    lead_id: str
    stage: str
    probability: int
    amount: Decimal | None
    currency: str | None
    close_date: date
    # its latest known change (stage history, then the updates applied): an older update is stale
    changed_at: datetime | None = None


@dataclass(frozen=True)
class UpdatePlan:
    states: tuple[OpportunityState, ...]  # the changed opportunities as they end up
    history: tuple[StageChange, ...]
    rejects: tuple[Reject, ...]
    applied: int  # rows that matched (changing something or not)
    stale: int = 0  # rows older than their opportunity's latest change: they change nothing


def detect_layout(header: Sequence[str]) -> str:
    h = {c.strip().lower() for c in header}
    if "deal stage" in h:
        return "hubspot"
    if "stage" in h and ({"opportunity name", "opportunity id"} & h):
        return "salesforce"
    return "plain"


def _pick(row: Mapping[str, str], names: tuple[str, ...]) -> str:
    for n in names:
        v = row.get(n)
        if v is not None and v.strip():
            return v.strip()
    return ""


def _datetime(text: str) -> datetime | None:
    text = text.strip()
    if not text:
        return None
    try:
        dt = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        dt = None
        for fmt in (
            "%m/%d/%Y %I:%M %p",
            "%m/%d/%Y %H:%M",
            "%m/%d/%Y",
            "%d.%m.%Y %H:%M",
            "%d.%m.%Y",
        ):
            try:
                dt = datetime.strptime(text, fmt)
                break
            except ValueError:
                continue
    if dt is None:
        return None
    return dt.replace(tzinfo=UTC) if dt.tzinfo is None else dt.astimezone(UTC)


def _amount(text: str) -> Decimal | None:
    cleaned = re.sub(r"[^\d.,-]", "", text)
    if "," in cleaned and "." in cleaned:
        cleaned = cleaned.replace(",", "")  # 12,500.00
    elif "," in cleaned:
        cleaned = (
            cleaned.replace(",", ".")
            if re.search(r",\d{1,2}$", cleaned)
            else cleaned.replace(",", "")
        )
    try:
        value = Decimal(cleaned)
    except InvalidOperation:
        return None
    return value if value.is_finite() and value >= 0 else None


def parse_updates(
    text: str, source: str, file_name: str, layout: str = "auto"
) -> tuple[list[OpportunityUpdate], list[Reject]]:
    """An export's rows as updates; a row that says nothing usable is a reject with its reason."""
    reader = csv.reader(io.StringIO(text.lstrip("\ufeff")))
    rows = list(reader)
    if not rows:
        return [], []
    header = [h.strip().lower() for h in rows[0]]
    kind = detect_layout(header) if layout == "auto" else layout
    parsed = [
        _parse_row(kind, dict(zip(header, cells, strict=False)), source, f"{file_name}:{line}",
                   line, ",".join(cells))
        for line, cells in enumerate(rows[1:], start=2)
        if any(c.strip() for c in cells) and not (kind == "salesforce" and _footer(cells))
    ]  # fmt: skip
    return _split(parsed)


def _footer(cells: Sequence[str]) -> bool:
    # A Salesforce report ends with lines of one cell (grand totals, the confidentiality notice,
    # the copyright, who generated it); a row of the report always fills more than one.
    return sum(1 for c in cells if c.strip()) == 1 and bool(cells[0].strip())


def _split(
    parsed: Sequence[OpportunityUpdate | Reject],
) -> tuple[list[OpportunityUpdate], list[Reject]]:
    updates = [u for u in parsed if isinstance(u, OpportunityUpdate)]
    return updates, [j for j in parsed if isinstance(j, Reject)]


def _parse_row(
    kind: str, row: Mapping[str, str], source: str, where: str, line: int, raw: str
) -> OpportunityUpdate | Reject:
    """One row of a layout (headers lower-cased) as an update, or a reject with its reason."""
    aliases = _ALIASES[kind]
    record_id = _pick(row, aliases["record_id"]) or where

    def bad(code: str, message: str) -> Reject:
        return Reject(source, record_id, REJECT_STAGE, code, message, raw)

    ref = _pick(row, aliases["opportunity_ref"]) or None
    found = _EMAIL_IN.search(_pick(row, aliases["email"]))
    email_key = normalize_email(found.group(0))[1] if found else None
    if ref is None and email_key is None:
        return bad("no_opportunity_key", "neither an opportunity id nor a valid email")
    stage = _pick(row, aliases["stage"]) or None
    outcome = _outcome(kind, row, aliases, stage)
    if stage is None and outcome is None:
        return bad("no_stage", "neither a stage nor won/lost")
    amount_text = _pick(row, aliases["amount"])
    amount = _amount(amount_text) if amount_text else None
    if amount_text and amount is None:
        return bad("bad_amount", f"not an amount: {amount_text[:30]!r}")
    currency = _pick(row, aliases["currency"]).upper() or None
    if currency is not None and not re.fullmatch(r"[A-Z]{3}", currency):
        return bad("bad_currency", f"not an ISO currency: {currency[:10]!r}")
    close_text = _pick(row, aliases["close_date"])
    close = _datetime(close_text)
    if close_text and close is None:
        return bad("bad_close_date", f"not a date: {close_text[:30]!r}")
    changed = _datetime(_pick(row, aliases["changed_at"]))
    return OpportunityUpdate(
        source,
        record_id,
        line,
        ref,
        email_key,
        stage,
        outcome,
        amount,
        currency,
        close.date() if close else None,
        changed,
        raw,
    )


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "1" if value else "0"
    return str(value)


def updates_from_salesforce(
    records: Sequence[Mapping[str, Any]],
    source: str,
    id_field: str | None = None,
    first_line: int = 1,
) -> tuple[list[OpportunityUpdate], list[Reject]]:
    """Opportunity records of the REST query resource, read like the rows of a report export."""
    parsed = []
    for line, r in enumerate(records, start=first_line):
        roles = (r.get("OpportunityContactRoles") or {}).get("records") or []
        email = (roles[0].get("Contact") or {}).get("Email") if roles else None
        row = {
            "opportunity id": _text(r.get("Id")),
            "leadflow opportunity id": _text(r.get(id_field)) if id_field else "",
            "contact: email": _text(email),
            "stage": _text(r.get("StageName")),
            "amount": _text(r.get("Amount")),
            "opportunity currency": _text(r.get("CurrencyIsoCode")),
            "close date": _text(r.get("CloseDate")),
            "won": _text(r.get("IsWon")),
            "closed": _text(r.get("IsClosed")),
            "last modified date": _text(r.get("LastModifiedDate")),
        }
        raw = json.dumps(r, sort_keys=True, default=str)
        parsed.append(_parse_row("salesforce", row, source, f"api:{line}", line, raw))
    return _split(parsed)


def updates_from_hubspot(
    deals: Sequence[Mapping[str, Any]],
    emails: Mapping[str, Sequence[str]],
    source: str,
    id_property: str | None = None,
    first_line: int = 1,
) -> tuple[list[OpportunityUpdate], list[Reject]]:
    """Deals of the CRM search API (internal stage ids), with their contacts' emails by deal id."""
    parsed = []
    for line, d in enumerate(deals, start=first_line):
        props = d.get("properties") or {}
        deal_id = _text(d.get("id"))
        row = {
            "record id": deal_id,
            "leadflow opportunity id": _text(props.get(id_property)) if id_property else "",
            "associated contact email": next(iter(emails.get(deal_id, ())), ""),
            "deal stage": _text(props.get("dealstage")),
            "amount": _text(props.get("amount")),
            "currency": _text(props.get("deal_currency_code")),
            "close date": _text(props.get("closedate")),
            "last modified date": _text(props.get("hs_lastmodifieddate") or d.get("updatedAt")),
        }
        raw = json.dumps(d, sort_keys=True, default=str)
        parsed.append(_parse_row("hubspot", row, source, f"api:{line}", line, raw))
    return _split(parsed)


def _outcome(
    kind: str, row: Mapping[str, str], aliases: Mapping[str, tuple[str, ...]], stage: str | None
) -> str | None:
    if kind == "salesforce":
        closed = _pick(row, aliases["closed"]).lower()
        won = _pick(row, aliases["won"]).lower()
        if closed in _TRUE:
            return "won" if won in _TRUE else "lost"
        return None
    if kind == "plain":
        value = _pick(row, aliases["outcome"]).lower()
        if value in {"won", "closed won", "win"}:
            return "won"
        if value in {"lost", "closed lost", "lose"}:
            return "lost"
        return None
    low = (stage or "").lower()
    return (
        "won"
        if low in {"closed won", "closedwon"}
        else "lost"
        if low in {"closed lost", "closedlost"}
        else None
    )


def plan_updates(
    updates: Sequence[OpportunityUpdate],
    by_id: Mapping[str, OpportunityState],
    by_email: Mapping[str, tuple[str, ...]],
    stages: Sequence[Stage],
    as_of: datetime,
    stage_map: Mapping[str, str] | None = None,
) -> UpdatePlan:
    """Apply the updates in time order to the opportunities they match; deterministic."""
    catalogue = {s.name.lower(): s for s in stages}
    won = next(s for s in stages if s.is_closed and s.is_won)
    lost = next(s for s in stages if s.is_closed and not s.is_won)
    names = {k.lower(): v for k, v in {**HUBSPOT_STAGES, **(stage_map or {})}.items()}
    state: dict[str, OpportunityState] = {}
    history: list[StageChange] = []
    rejects: list[Reject] = []
    applied = stale = 0
    ordered = sorted(updates, key=lambda u: (u.changed_at or as_of, u.source, u.line))
    for u in ordered:

        def bad(code: str, message: str, u: OpportunityUpdate = u) -> None:
            rejects.append(Reject(u.source, u.record_id, REJECT_STAGE, code, message, u.raw))

        opp_id = u.opportunity_ref if u.opportunity_ref in by_id else None
        if opp_id is None and u.email_key:
            found = by_email.get(u.email_key, ())
            if len(found) > 1:
                bad("ambiguous_email", f"the email matches {len(found)} opportunities")
                continue
            opp_id = found[0] if found else None
        if opp_id is None:
            bad("unmatched_opportunity", "no opportunity with that id, and no lead with that email")
            continue
        if u.outcome == "won":
            target = won
        elif u.outcome == "lost":
            target = lost
        else:
            name = (u.stage or "").lower()
            found_stage = catalogue.get(names.get(name, name).lower())
            if found_stage is None:
                bad("unknown_stage", f"stage {u.stage!r} is not in opportunity_stages (map it)")
                continue
            target = found_stage
        before = state.get(opp_id, by_id[opp_id])
        when = u.changed_at or as_of
        if before.changed_at is not None and when < before.changed_at:
            # An export read again, or an older one after a newer: what it says was overtaken.
            stale += 1
            continue
        applied += 1
        after = replace(
            before,
            stage=target.name,
            probability=target.probability if target.name != before.stage else before.probability,
            amount=u.amount if u.amount is not None else before.amount,
            currency=u.currency or before.currency,
            close_date=u.close_date or before.close_date,
            changed_at=when,
        )
        if target.name != before.stage:
            history.append(
                StageChange(
                    opp_id,
                    before.lead_id,
                    before.stage,
                    target.name,
                    target.probability,
                    when,
                    f"CRM update {u.record_id} from {u.source}",
                    f"crm:{u.source}"[:32],
                )
            )
        if replace(after, changed_at=by_id[opp_id].changed_at) != by_id[opp_id]:
            state[opp_id] = after
        else:
            state.pop(opp_id, None)
    return UpdatePlan(
        tuple(state[k] for k in sorted(state)), tuple(history), tuple(rejects), applied, stale
    )
