"""Review decisions take effect on the next run, even when nothing new arrived: a must_link
merges the two leads (recorded in lead_merges), a cannot_link splits the lead that holds both
contacts (recorded in lead_splits, the lead keeping its id), and each is marked applied."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, select, text

from flows.settings import Settings
from flows.stages import extract_and_land, process_pending
from transforms.resolve import review_id
from warehouse import load, stewardship
from warehouse import schema as t
from warehouse.db import make_engine, upgrade

NOW = datetime(2026, 11, 1, tzinfo=UTC)
SHEET = """\
Name;E-Mail;Stadt;PLZ;Straße;Erstellt am
Hans Weber;;Hannover;30159;Gartenweg 3;2026-10-01
Hans Weber;h.weber@gmx.de;;30159;;2026-10-02
Ayşe Kaya;ayse@kaya.com.tr;;;;2026-10-03
Ayse Kaya;AYSE@kaya.com.tr;;;;2026-10-04
"""


def _setup(tmp_path: Path, url: str) -> tuple[Engine, Settings]:
    sheet = tmp_path / "fair.csv"
    sheet.write_text(SHEET, encoding="utf-8")
    settings = Settings.model_validate(
        {
            "warehouse": {"url": url},
            "sources": [{"name": "fair", "kind": "spreadsheet", "path": str(sheet)}],
            "quality": {"docs_dir": str(tmp_path / "docs")},
        }
    )
    engine = make_engine(url)
    upgrade(engine)
    return engine, settings


def _leads(engine: Engine) -> dict[str, str]:
    """contact's name/email → lead id"""
    with engine.connect() as conn:
        q = select(t.contacts.c.contact_id, t.contacts.c.received_at, t.lead_links.c.lead_id).join(
            t.lead_links, t.lead_links.c.contact_id == t.contacts.c.contact_id
        )
        rows = sorted(conn.execute(q), key=lambda r: str(r.received_at))
    return {f"c{i + 1}": r.lead_id for i, r in enumerate(rows)}


def _contacts(engine: Engine) -> list[str]:
    with engine.connect() as conn:
        q = select(t.contacts.c.contact_id, t.contacts.c.received_at)
        return [r.contact_id for r in sorted(conn.execute(q), key=lambda r: str(r.received_at))]


def _decide(engine: Engine, a: str, b: str, decision: str) -> str:
    rid = review_id(a, b)
    with engine.begin() as conn:
        row: dict[str, Any] = {
            "review_id": rid,
            "contact_a": min(a, b),
            "contact_b": max(a, b),
            "score": 0.0,
            "evidence": {},
            "decision": "open",
            "decided_by": None,
            "decided_at": None,
            "applied": False,
            "run_id": "run_seed",
        }
        load.upsert(conn, t.match_review, [row], update=False)
        stewardship.decide_review(conn, rid, decision, "steward", NOW)
    return rid


def _applied(engine: Engine, rid: str) -> bool:
    with engine.connect() as conn:
        return bool(
            conn.execute(
                select(t.match_review.c.applied).where(t.match_review.c.review_id == rid)
            ).scalar_one()
        )


def test_decisions_apply_on_the_next_run(tmp_path: Path, warehouse_url: str) -> None:
    engine, settings = _setup(tmp_path, warehouse_url)
    extract_and_land(engine, settings.sources[0], "run_1")
    process_pending(engine, settings, "run_1")
    c1, c2, c3, c4 = _contacts(engine)
    first = _leads(engine)
    assert first["c1"] != first["c2"]  # the grey pair: two leads
    assert first["c3"] == first["c4"]  # one email: one lead

    # a steward says c1 and c2 are one person, c3 and c4 two: the next run, with nothing new
    merge = _decide(engine, c1, c2, "must_link")
    split = _decide(engine, c3, c4, "cannot_link")
    stats = process_pending(engine, settings, "run_2")
    assert stats.raw_processed == 0
    after = _leads(engine)
    assert after["c1"] == after["c2"] == first["c1"]  # the lead seen first survives
    assert after["c3"] == first["c3"] and after["c4"] != first["c3"]
    assert _applied(engine, merge) and _applied(engine, split)
    with engine.connect() as conn:
        merges = conn.execute(text("select merged_lead_id, into_lead_id, run_id from lead_merges"))
        assert [tuple(r) for r in merges] == [(first["c2"], first["c1"], "run_2")]
        splits = conn.execute(text("select lead_id, split_from_lead_id, run_id from lead_splits"))
        assert [tuple(r) for r in splits] == [(after["c4"], first["c3"], "run_2")]
        leads: dict[str, int] = {
            r[0]: r[1] for r in conn.execute(text("select lead_id, contact_count from leads"))
        }
    assert leads == {after["c1"]: 2, after["c3"]: 1, after["c4"]: 1}

    # applied once: the next run changes nothing, and a new sighting keeps the two apart
    process_pending(engine, settings, "run_3")
    assert _leads(engine) == after
    sheet = Path(settings.sources[0].path or "")
    sheet.write_text(SHEET + "Ayşe Kaya;ayse@kaya.com.tr;Ankara;;;2026-10-05\n", encoding="utf-8")
    extract_and_land(engine, settings.sources[0], "run_4")
    process_pending(engine, settings, "run_4")
    final = _leads(engine)
    assert final["c3"] != final["c4"] and {final["c3"], final["c4"]} == {after["c3"], after["c4"]}
    engine.dispose()


def test_a_split_from_the_console_applies_on_the_next_run(
    tmp_path: Path, warehouse_url: str
) -> None:
    from warehouse.stewardship import split_contact

    engine, settings = _setup(tmp_path, warehouse_url)
    extract_and_land(engine, settings.sources[0], "run_1")
    process_pending(engine, settings, "run_1")
    _, _, c3, c4 = _contacts(engine)
    lead = _leads(engine)["c3"]
    with engine.begin() as conn:
        ids = split_contact(conn, lead, c4, "steward", NOW)
    process_pending(engine, settings, "run_2")
    after = _leads(engine)
    assert after["c3"] == lead and after["c4"] != lead  # the first contact keeps the lead's id
    assert all(_applied(engine, rid) for rid in ids)
    with engine.connect() as conn:
        splits = conn.execute(text("select lead_id, split_from_lead_id, run_id from lead_splits"))
        assert [tuple(r) for r in splits] == [(after["c4"], lead, "run_2")]
    engine.dispose()


def test_a_revocation_waits_for_a_rebuild_and_is_shown_as_not_applied(
    tmp_path: Path, warehouse_url: str
) -> None:
    """A run cannot undo a merge or a split it already made: a revoked decision stays "not
    applied" (so the console keeps offering Apply now) until a rebuild restores the clustering."""
    from warehouse import stewardship

    engine, settings = _setup(tmp_path, warehouse_url)
    extract_and_land(engine, settings.sources[0], "run_1")
    process_pending(engine, settings, "run_1")
    c1, c2, c3, c4 = _contacts(engine)
    first = _leads(engine)
    with engine.begin() as conn:
        split = stewardship.split_contact(conn, first["c3"], c4, "steward", NOW)
        pair = conn.execute(
            select(t.match_review.c.review_id).where(t.match_review.c.kind == "pair")
        ).scalar_one()
        stewardship.decide(conn, pair, "must_link", "steward", NOW)
    process_pending(engine, settings, "run_2")
    decided = _leads(engine)
    assert decided["c1"] == decided["c2"] and decided["c3"] != decided["c4"]

    def waiting() -> int:
        with engine.connect() as conn:
            return int(stewardship.overview(conn)["pending_decisions"])

    assert waiting() == 0
    with engine.begin() as conn:
        stewardship.revoke(conn, split[0], "steward", NOW)
        stewardship.revoke(conn, pair, "steward", NOW)
    assert waiting() == 2
    process_pending(engine, settings, "run_3")  # a run: nothing it can undo, nothing marked done
    assert _leads(engine) == decided and waiting() == 2
    process_pending(engine, settings, "run_4", rebuild=True)
    assert _leads(engine) == first and waiting() == 0
    with engine.connect() as conn:
        queue, _ = stewardship.review_queue(conn)
    assert [r["review_id"] for r in queue] == [pair]
    engine.dispose()
