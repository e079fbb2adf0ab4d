"""What the steward console reads and writes: the review queue, lead search and pages, splits, revocations."""

from __future__ import annotations

from collections import defaultdict
from datetime import date, datetime, timedelta
from typing import Any

from sqlalchemy import Connection, and_, case, func, or_, select

from transforms.resolve import CANNOT_LINK, MUST_LINK, review_id
from warehouse import quarantine, resolution, runs
from warehouse import schema as t
from warehouse.load import upsert, utc

OPEN, REVOKED = "open", "revoked"
PAIR, SPLIT = "pair", "split"
STEWARD_RUN = "steward"  # the run id a steward's own rows carry in match_review

# The contact fields a steward compares side by side, in the order shown.
CONTACT_FIELDS = (
    "full_name",
    "email",
    "phone",
    "company",
    "job_title",
    "street",
    "city",
    "postal_code",
    "country",
    "source",
    "received_at",
)


class StewardError(ValueError):
    """A request the warehouse cannot honour (an unknown pair, a lead of one contact …)."""


def _rows(conn: Connection, q: Any) -> list[dict[str, Any]]:
    return [dict(r._mapping) for r in conn.execute(q)]


# ---- overview ------------------------------------------------------------------------------


def overview(conn: Connection) -> dict[str, Any]:
    """The numbers a steward starts from: what is live, what waits for a person."""

    def count(table: Any, *where: Any) -> int:
        q = select(func.count()).select_from(table)
        if where:
            q = q.where(*where)
        return int(conn.execute(q).scalar_one())

    mr = t.match_review
    return {
        "contacts": count(t.contacts),
        "leads": count(t.leads),
        "opportunities": count(t.opportunities),
        "open_reviews": count(mr, mr.c.decision == OPEN, mr.c.kind == PAIR),
        # decisions the next run applies, and revocations that wait for a rebuild (Apply now)
        "pending_decisions": resolution.pending_decisions(conn)
        + resolution.pending_revocations(conn),
        "open_rejects": count(t.rejects, t.rejects.c.status == quarantine.QUARANTINED),
        "runs": runs.recent_runs(conn, 5),
    }


def funnel_by_week(conn: Connection, weeks: int = 12) -> list[dict[str, Any]]:
    """Leads by the ISO week they were first seen: leads → qualified → opportunities."""
    ld = t.leads
    day = func.date(ld.c.first_seen_at)
    q = select(
        day,
        func.count(),
        func.sum(case((ld.c.status == "Qualified", 1), else_=0)),
        func.count(ld.c.opportunity_id),
    ).group_by(day)
    per: dict[date, list[int]] = defaultdict(lambda: [0, 0, 0])
    for d, n, qual, opps in conn.execute(q):
        if d is None:
            continue
        d = d if isinstance(d, date) else date.fromisoformat(str(d)[:10])
        monday = d - timedelta(days=d.weekday())
        acc = per[monday]
        acc[0] += int(n)
        acc[1] += int(qual or 0)
        acc[2] += int(opps)
    out = [
        {"week": w.isoformat(), "leads": v[0], "qualified": v[1], "opportunities": v[2]}
        for w, v in sorted(per.items())
    ]
    return out[-weeks:]


# ---- runs and rejects ----------------------------------------------------------------------


def runs_with_checks(conn: Connection, limit: int = 30) -> list[dict[str, Any]]:
    """Recent runs, each with its failed data-quality checks."""
    recent = runs.recent_runs(conn, limit)
    ids = [r["run_id"] for r in recent]
    dq = t.dq_results
    failed: dict[str, list[dict[str, Any]]] = defaultdict(list)
    if ids:
        q = (
            select(dq)
            .where(dq.c.run_id.in_(ids), dq.c.success == False)  # noqa: E712
            .order_by(dq.c.run_id, dq.c.id)
        )
        for row in _rows(conn, q):
            failed[row["run_id"]].append(row)
    for r in recent:
        r["failed_checks"] = failed.get(r["run_id"], [])
    return recent


def run_checks(conn: Connection, run_id: str) -> list[dict[str, Any]]:
    dq = t.dq_results
    return _rows(conn, select(dq).where(dq.c.run_id == run_id).order_by(dq.c.id))


def reject_groups(conn: Connection, samples: int = 3) -> list[dict[str, Any]]:
    """Quarantined records by reason, largest first, each with a few samples of its raw text."""
    rj = t.rejects
    q = (
        select(rj.c.code, func.count(), func.count(rj.c.raw_id))
        .where(rj.c.status == quarantine.QUARANTINED)
        .group_by(rj.c.code)
    )
    groups = [
        {"reason": code, "rejects": int(n), "replayable": int(replayable)}
        for code, n, replayable in conn.execute(q)
    ]
    groups.sort(key=lambda g: (-g["rejects"], g["reason"]))
    for g in groups:
        sq = (
            select(
                rj.c.reject_id,
                rj.c.source,
                rj.c.source_record_id,
                rj.c.stage,
                rj.c.message,
                func.substr(rj.c.raw, 1, 400).label("raw"),
                rj.c.run_id,
            )
            .where(rj.c.status == quarantine.QUARANTINED, rj.c.code == g["reason"])
            .order_by(rj.c.reject_id)
            .limit(samples)
        )
        g["samples"] = _rows(conn, sq)
    return groups


# ---- the review queue ----------------------------------------------------------------------


def _uncertainty(score: Any, prior_log2: float) -> Any:
    """How unsure the model is about a pair, in (0, 1]: highest at probability one half.

    A score in [0, 1] is a probability; otherwise it is a log2 match weight, whose distance from
    the even-odds weight (−prior) stands in for the distance of the probability from ½.
    """
    return case(
        (and_(score >= 0, score <= 1), 1 - func.abs(2 * score - 1)),
        else_=1.0 / (1.0 + func.abs(score + prior_log2)),
    )


def _queue_select(prior_log2: float) -> Any:
    mr, lk, ld = t.match_review, t.lead_links, t.leads
    ka, kb = lk.alias("ka"), lk.alias("kb")
    la, lb = ld.alias("la"), ld.alias("lb")
    size = la.c.contact_count + lb.c.contact_count
    priority = (_uncertainty(mr.c.score, prior_log2) * size).label("priority")
    return (
        select(
            mr.c.review_id,
            mr.c.contact_a,
            mr.c.contact_b,
            mr.c.score,
            la.c.lead_id.label("lead_a"),
            lb.c.lead_id.label("lead_b"),
            la.c.full_name.label("name_a"),
            lb.c.full_name.label("name_b"),
            la.c.contact_count.label("size_a"),
            lb.c.contact_count.label("size_b"),
            priority,
        )
        .select_from(mr)
        .join(ka, ka.c.contact_id == mr.c.contact_a)
        .join(kb, kb.c.contact_id == mr.c.contact_b)
        .join(la, la.c.lead_id == ka.c.lead_id)
        .join(lb, lb.c.lead_id == kb.c.lead_id)
        .where(mr.c.decision == OPEN, mr.c.kind == PAIR, ka.c.lead_id != kb.c.lead_id)
    )


def queue_version(conn: Connection) -> tuple[Any, ...]:
    """Changes whenever the queue's order may have changed other than by pairs leaving it: a run
    finished (new pairs, new lead sizes) or a decision was revoked (a pair back in the queue).
    Two cheap reads: the run log's newest end and count, the revocations in the decision log.
    A pair decided since is dropped from a computed order as its page is read (`queue_rows`)."""
    pr, lg = t.pipeline_runs, t.review_log
    finished = conn.execute(select(func.max(pr.c.finished_at), func.count())).one()
    revoked = conn.execute(
        select(func.count()).select_from(lg).where(lg.c.action == "revoke")
    ).scalar_one()
    return (str(finished[0]), int(finished[1]), int(revoked))


def queue_order(conn: Connection, prior_log2: float = -10.0) -> list[str]:
    """Every open pair's review id, the decision that matters most first: the whole queue is
    ordered once (callers cache it per `queue_version`), pages then read 25 pairs by id."""
    q = _queue_select(prior_log2).subquery()
    ordered = select(q.c.review_id).order_by(q.c.priority.desc(), q.c.review_id)
    return list(conn.execute(ordered).scalars())


def queue_rows(
    conn: Connection, review_ids: list[str], prior_log2: float = -10.0
) -> list[dict[str, Any]]:
    """The named pairs as queue rows (in the given order), those still open only."""
    if not review_ids:
        return []
    q = _queue_select(prior_log2).where(t.match_review.c.review_id.in_(review_ids))
    by_id = {r["review_id"]: r for r in _rows(conn, q)}
    return [by_id[i] for i in review_ids if i in by_id]


def review_queue(
    conn: Connection,
    *,
    page: int = 1,
    per_page: int = 25,
    prior_log2: float = -10.0,
    order: list[str] | None = None,
) -> tuple[list[dict[str, Any]], int]:
    """Open grey-zone pairs whose contacts are still in different leads, the decision that matters
    most first (uncertainty × the contacts of both leads), and how many there are in all.

    `order` is a `queue_order` computed before (possibly a little stale: pairs decided since
    are left out of the page)."""
    order = queue_order(conn, prior_log2) if order is None else order
    page = max(1, page)
    ids = order[(page - 1) * per_page : page * per_page]
    return queue_rows(conn, ids, prior_log2), len(order)


def contacts_by_id(conn: Connection, contact_ids: list[str]) -> dict[str, dict[str, Any]]:
    """Contacts with their lead, link (rule, score, evidence) and raw record."""
    if not contact_ids:
        return {}
    c, lk, r = t.contacts, t.lead_links, t.raw_contacts
    q = (
        select(
            c,
            lk.c.lead_id,
            lk.c.rule.label("link_rule"),
            lk.c.score.label("link_score"),
            lk.c.evidence.label("link_evidence"),
            r.c.source_record_id,
            r.c.payload.label("raw_payload"),
        )
        .select_from(c)
        .outerjoin(lk, lk.c.contact_id == c.c.contact_id)
        .outerjoin(r, r.c.raw_id == c.c.raw_id)
        .where(c.c.contact_id.in_(sorted(set(contact_ids))))
    )
    out = {}
    for row in _rows(conn, q):
        row["received_at"] = utc(row["received_at"])
        out[row["contact_id"]] = row
    return out


def review_detail(conn: Connection, rid: str) -> dict[str, Any] | None:
    """One pair: the review row, both contacts side by side, and the fields that differ."""
    mr = t.match_review
    row = conn.execute(select(mr).where(mr.c.review_id == rid)).first()
    if row is None:
        return None
    review = dict(row._mapping)
    found = contacts_by_id(conn, [review["contact_a"], review["contact_b"]])
    a, b = found.get(review["contact_a"]), found.get(review["contact_b"])
    differing = [
        f
        for f in CONTACT_FIELDS
        if a is not None and b is not None and _norm(a.get(f)) != _norm(b.get(f))
    ]
    return {"review": review, "a": a, "b": b, "differing": differing, "log": review_log(conn, rid)}


def _norm(value: Any) -> Any:
    return value.strip().casefold() if isinstance(value, str) else value


def review_log(conn: Connection, rid: str) -> list[dict[str, Any]]:
    lg = t.review_log
    return _rows(conn, select(lg).where(lg.c.review_id == rid).order_by(lg.c.log_id))


def decided_reviews(conn: Connection, limit: int = 50) -> list[dict[str, Any]]:
    """Decisions stewards made (pairs and splits), newest first: what can be revoked."""
    mr = t.match_review
    q = (
        select(
            mr.c.review_id,
            mr.c.kind,
            mr.c.contact_a,
            mr.c.contact_b,
            mr.c.lead_id,
            mr.c.decision,
            mr.c.decided_by,
            mr.c.decided_at,
            mr.c.applied,
        )
        .where(mr.c.decision.in_((MUST_LINK, CANNOT_LINK)))
        .order_by(mr.c.decided_at.desc(), mr.c.review_id)
        .limit(limit)
    )
    return _rows(conn, q)


def _log(
    conn: Connection, rid: str, action: str, decision: str, steward: str, at: datetime
) -> None:
    conn.execute(
        t.review_log.insert().values(
            review_id=rid, action=action, decision=decision, steward=steward, at=at
        )
    )


def open_reviews(conn: Connection, limit: int = 100) -> list[dict[str, Any]]:
    """Grey-zone pairs still waiting for a person, strongest first."""
    mr = t.match_review
    q = (
        select(mr)
        .where(mr.c.decision == "open")
        .order_by(mr.c.score.desc(), mr.c.review_id)
        .limit(limit)
    )
    return [dict(row._mapping) for row in conn.execute(q)]


def decide_review(
    conn: Connection, review_id: str, decision: str, decided_by: str, decided_at: datetime
) -> None:
    """Record a person's decision on a pair; the next run applies it and every run honours it."""
    if decision not in (MUST_LINK, CANNOT_LINK):
        raise ValueError(f"decision must be {MUST_LINK} or {CANNOT_LINK}, not {decision!r}")
    mr = t.match_review
    done = conn.execute(
        mr.update()
        .where(mr.c.review_id == review_id)
        .values(decision=decision, decided_by=decided_by, decided_at=decided_at, applied=False)
    )
    if done.rowcount != 1:
        raise KeyError(f"no review pair {review_id}")


def decide(conn: Connection, rid: str, decision: str, steward: str, at: datetime) -> None:
    """A steward's decision on a pair: stored with who and when, logged, binding every later run."""
    mr = t.match_review
    row = conn.execute(select(mr.c.kind).where(mr.c.review_id == rid)).first()
    if row is None:
        raise StewardError(f"no review pair {rid}")
    decide_review(conn, rid, decision, steward, at)
    conn.execute(mr.update().where(mr.c.review_id == rid).values(revoked_by=None, revoked_at=None))
    _log(conn, rid, "decide", decision, steward, at)


def revoke(conn: Connection, rid: str, steward: str, at: datetime) -> list[str]:
    """Take a decision back. A pair goes back to the queue; a split is revoked as a whole (every
    cannot_link row of that contact against that lead). Returns the review ids revoked.

    The next processing that re-derives the leads (a rebuild, or *apply now*) restores the
    clustering the pair had before the decision.
    """
    mr = t.match_review
    row = conn.execute(select(mr).where(mr.c.review_id == rid)).first()
    if row is None:
        raise StewardError(f"no review pair {rid}")
    if row.decision not in (MUST_LINK, CANNOT_LINK):
        raise StewardError(f"review pair {rid} has no decision to revoke")
    if row.kind == SPLIT:
        ids = list(
            conn.execute(
                select(mr.c.review_id).where(
                    mr.c.kind == SPLIT,
                    mr.c.lead_id == row.lead_id,
                    mr.c.contact_a == row.contact_a,
                    mr.c.decision == CANNOT_LINK,
                )
            ).scalars()
        )
        new_decision = REVOKED
    else:
        ids, new_decision = [rid], OPEN
    conn.execute(
        mr.update()
        .where(mr.c.review_id.in_(ids))
        .values(
            decision=new_decision,
            decided_by=None,
            decided_at=None,
            applied=False,
            revoked_by=steward,
            revoked_at=at,
        )
    )
    for i in ids:
        _log(conn, i, "revoke", new_decision, steward, at)
    return sorted(ids)


def split_contact(
    conn: Connection, lead_id: str, contact_id: str, steward: str, at: datetime
) -> list[str]:
    """ "Not this person": the contact must never share a lead with the lead's other contacts.

    Stored as one cannot_link decision of kind 'split' against each other contact (the resolver
    honours pairwise decisions); the next processing separates it. The split contact is
    `contact_a` of each row, so a revocation finds the whole split. Returns the review ids.
    """
    lk, mr = t.lead_links, t.match_review
    members = list(
        conn.execute(
            select(lk.c.contact_id).where(lk.c.lead_id == lead_id).order_by(lk.c.contact_id)
        ).scalars()
    )
    if contact_id not in members:
        raise StewardError(f"contact {contact_id} is not a contact of lead {lead_id}")
    others = [c for c in members if c != contact_id]
    if not others:
        raise StewardError(f"lead {lead_id} has one contact only: there is nothing to split")
    ids = [review_id(contact_id, o) for o in others]
    rows = [
        {
            "review_id": rid,
            "contact_a": contact_id,
            "contact_b": other,
            "score": 0.0,
            "evidence": {"split_from": lead_id, "contact_id": contact_id},
            "decision": CANNOT_LINK,
            "decided_by": steward,
            "decided_at": at,
            "applied": False,
            "run_id": STEWARD_RUN,
            "kind": SPLIT,
            "lead_id": lead_id,
            "revoked_by": None,
            "revoked_at": None,
        }
        for rid, other in zip(ids, others, strict=True)
    ]
    # A grey-zone pair already between them becomes part of the split (its evidence stays).
    existing = set(conn.execute(select(mr.c.review_id).where(mr.c.review_id.in_(ids))).scalars())
    upsert(conn, mr, [r for r in rows if r["review_id"] not in existing], update=False)
    if existing:
        conn.execute(
            mr.update()
            .where(mr.c.review_id.in_(sorted(existing)))
            .values(
                contact_a=contact_id,
                contact_b=case(
                    (mr.c.contact_a == contact_id, mr.c.contact_b), else_=mr.c.contact_a
                ),
                decision=CANNOT_LINK,
                decided_by=steward,
                decided_at=at,
                applied=False,
                kind=SPLIT,
                lead_id=lead_id,
                revoked_by=None,
                revoked_at=None,
            )
        )
    for rid in ids:
        _log(conn, rid, "split", CANNOT_LINK, steward, at)
    return ids


# ---- the lead explorer ---------------------------------------------------------------------


def _prefix(column: Any, text: str) -> Any:
    """`column` starts with `text`, as a range both SQLite and PostgreSQL answer from a B-tree."""
    return and_(column >= text, column < text + "\U0010ffff")


def search_leads(
    conn: Connection,
    *,
    email_key: str | None = None,
    phone: str | None = None,
    name: str | None = None,
    company: str | None = None,
    limit: int = 50,
) -> list[dict[str, Any]]:
    """Leads with a contact whose normalized email, phone, name or company matches (keys exact,
    names and companies by prefix), each once, most contacts first."""
    c, lk, ld = t.contacts, t.lead_links, t.leads
    conds = []
    if email_key:
        conds.append(
            c.c.email_key == email_key if "@" in email_key else _prefix(c.c.email_key, email_key)
        )
    if phone:
        conds.append(c.c.phone == phone)
    if name:
        conds.append(_prefix(c.c.name_key, name))
    if company:
        conds.append(_prefix(c.c.company_key, company))
    if not conds:
        return []
    # One indexed lookup per key, each capped, then the leads of what they found.
    found: set[str] = set()
    for cond in conds:
        found.update(conn.execute(select(c.c.contact_id).where(cond).limit(limit * 20)).scalars())
    if not found:
        return []
    lead_ids = (
        select(lk.c.lead_id)
        .where(lk.c.contact_id.in_(sorted(found)))
        .distinct()
        .limit(limit)
        .subquery()
    )
    q = (
        select(
            ld.c.lead_id,
            ld.c.full_name,
            ld.c.email,
            ld.c.phone,
            ld.c.company,
            ld.c.city,
            ld.c.status,
            ld.c.score,
            ld.c.contact_count,
            ld.c.last_seen_at,
        )
        .join(lead_ids, lead_ids.c.lead_id == ld.c.lead_id)
        .order_by(ld.c.contact_count.desc(), ld.c.lead_id)
    )
    return _rows(conn, q)


def merged_into_now(conn: Connection, lead_id: str) -> str | None:
    """Where a merged lead id lives now (following merges of merges), or None if it is live."""
    m, ld = t.lead_merges, t.leads
    seen = {lead_id}
    current = lead_id
    while conn.execute(select(ld.c.lead_id).where(ld.c.lead_id == current)).first() is None:
        into = conn.execute(
            select(m.c.into_lead_id).where(m.c.merged_lead_id == current)
        ).scalar_one_or_none()
        if into is None or into in seen:
            return None
        seen.add(into)
        current = into
    return current if current != lead_id else None


def lead_detail(conn: Connection, lead_id: str) -> dict[str, Any] | None:
    """Everything about one lead: golden record and where each value came from, contacts with
    raw payload and link evidence, merges, decisions, qualification, account, opportunity and
    the history of both."""
    ld = t.leads
    row = conn.execute(select(ld).where(ld.c.lead_id == lead_id)).first()
    if row is None:
        return None
    lead = dict(row._mapping)
    lk = t.lead_links
    ids = list(conn.execute(select(lk.c.contact_id).where(lk.c.lead_id == lead_id)).scalars())
    contacts = sorted(
        contacts_by_id(conn, ids).values(), key=lambda x: (x["received_at"], x["contact_id"])
    )
    m = t.lead_merges
    merged_in = _rows(
        conn, select(m).where(m.c.into_lead_id == lead_id).order_by(m.c.merged_lead_id)
    )
    merged_out = _rows(conn, select(m).where(m.c.merged_lead_id == lead_id))
    mr = t.match_review
    reviews = (
        _rows(
            conn,
            select(mr)
            .where(or_(mr.c.contact_a.in_(ids), mr.c.contact_b.in_(ids)))
            .order_by(mr.c.kind, mr.c.review_id),
        )
        if ids
        else []
    )
    sh = t.lead_status_history
    status_history = _rows(
        conn, select(sh).where(sh.c.lead_id == lead_id).order_by(sh.c.changed_at)
    )
    account = opportunity = None
    stage_history: list[dict[str, Any]] = []
    if lead.get("account_id"):
        a = t.accounts
        r = conn.execute(select(a).where(a.c.account_id == lead["account_id"])).first()
        account = dict(r._mapping) if r else None
    o = t.opportunities
    r = conn.execute(
        select(o).where(
            or_(o.c.lead_id == lead_id, o.c.opportunity_id == lead.get("opportunity_id"))
        )
    ).first()
    if r is not None:
        opportunity = dict(r._mapping)
        osh = t.opportunity_stage_history
        stage_history = _rows(
            conn,
            select(osh)
            .where(osh.c.opportunity_id == opportunity["opportunity_id"])
            .order_by(osh.c.changed_at),
        )
    # its decisions the next run applies and its revocations that wait for a rebuild
    unapplied = (
        conn.execute(
            select(func.count())
            .select_from(mr)
            .where(
                or_(mr.c.contact_a.in_(ids), mr.c.contact_b.in_(ids)),
                or_(resolution.decision_pending(), resolution.revocation_pending()),
            )
        ).scalar_one()
        if ids
        else 0
    )
    return {
        "lead": lead,
        "contacts": contacts,
        "unapplied": int(unapplied),
        "merged_in": merged_in,
        "merged_out": merged_out,
        "reviews": reviews,
        "status_history": status_history,
        "account": account,
        "opportunity": opportunity,
        "stage_history": stage_history,
    }


def lead_ids_of(conn: Connection, contact_ids: list[str]) -> dict[str, str]:
    """contact id → lead id, for the named contacts that have a lead."""
    lk = t.lead_links
    q = select(lk.c.contact_id, lk.c.lead_id).where(lk.c.contact_id.in_(sorted(set(contact_ids))))
    return {a: b for a, b in conn.execute(q)}
