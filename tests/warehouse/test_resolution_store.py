"""Resolution against the warehouse: candidates by blocking keys, stable ids, merges, reviews."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Engine, func, select

from flows.settings import Settings
from flows.stages import Resolving, load_rules, normalize_options, process_chunk
from transforms.match import MatchSettings, match_table
from transforms.normalize import normalize_batch
from transforms.records import RawRow, raw_id_for
from transforms.scoring import default_model
from warehouse import matching, publish, stewardship
from warehouse import schema as t
from warehouse.db import make_engine, upgrade

T0 = datetime(2026, 3, 1, tzinfo=UTC)
SETTINGS = Settings()


def raw(n: int, **payload: Any) -> RawRow:
    rid = raw_id_for("fair", str(n))
    return RawRow(rid, "fair", "spreadsheet", str(n), T0 + timedelta(hours=n), payload)


def run(engine: Engine, rows: list[RawRow]) -> None:
    with engine.begin() as conn:
        matching.ensure_index(conn)  # as every run does before it resolves
        ps, _, _ = process_chunk(
            conn, rows, normalize_options(SETTINGS), load_rules(SETTINGS.rules)
        )
        publish.publish(conn, ps, "run_test")


def lead_of(engine: Engine) -> dict[str, str]:
    with engine.connect() as conn:
        rows = conn.execute(select(t.lead_links.c.contact_id, t.lead_links.c.lead_id))
        return {r.contact_id.replace("con_", "raw_"): r.lead_id for r in rows}


def test_incremental_resolution_in_the_warehouse(warehouse_url: str) -> None:
    engine = make_engine(warehouse_url)
    upgrade(engine)
    hans = raw(1, name="Hans Weber", city="Hannover", postal_code="30159", street="Gartenweg 3")
    ayse = raw(2, name="Ayşe Kaya", email="ayse@firma.com.tr", phone="0532 123 45 67")
    grey = raw(3, name="Hans Weber", postal_code="30159", email="h.weber@gmx.de")
    run(engine, [hans, ayse, grey])
    first = lead_of(engine)
    assert len(set(first.values())) == 3

    # A paper form with only a name and an address finds Hans through the blocking index.
    paper = raw(4, name="WEBER Hans", city="Hannover", postal_code="30159", street="Gartenweg 3")
    run(engine, [paper])
    after = lead_of(engine)
    assert after[paper.raw_id] == first[hans.raw_id]
    assert {k: after[k] for k in first} == first  # nobody else moved

    with engine.connect() as conn:
        pair = {hans.raw_id.replace("raw_", "con_"), grey.raw_id.replace("raw_", "con_")}
        reviews = stewardship.open_reviews(conn)
        (review,) = [r for r in reviews if {r["contact_a"], r["contact_b"]} == pair]
        link = conn.execute(
            select(
                t.lead_links.c.rule, t.lead_links.c.evidence, t.lead_links.c.model_version
            ).where(t.lead_links.c.contact_id == paper.raw_id.replace("raw_", "con_"))
        ).one()
        # The link keeps why: the model's version, each comparison's level and weight.
        levels = {c["name"]: c["level"] for c in link.evidence["comparisons"]}
        assert link.rule == "model" and link.model_version == default_model().version
        assert levels["address"] == "same street, number and postcode"
        assert levels["first"] == levels["last"] == "exact"  # "WEBER Hans": surname in capitals
        assert review["model_version"] == default_model().version

    # A person says the grey pair is one person: the next run merges the two leads.
    with engine.begin() as conn:
        stewardship.decide_review(conn, review["review_id"], "must_link", "analyst", T0)
    run(engine, [raw(5, name="John Smith", email="john@acme.com")])
    merged = lead_of(engine)
    assert merged[grey.raw_id] == first[hans.raw_id]
    with engine.connect() as conn:
        merges = conn.execute(select(t.lead_merges.c.merged_lead_id, t.lead_merges.c.into_lead_id))
        assert [tuple(m) for m in merges] == [(first[grey.raw_id], first[hans.raw_id])]
        assert conn.execute(select(func.count()).select_from(t.leads)).scalar_one() == 3
        decided = conn.execute(
            select(t.match_review).where(t.match_review.c.review_id == review["review_id"])
        ).one()
        assert decided.decision == "must_link" and decided.applied

    # The matching index built again from the contacts (as after a change of its definition)
    # is the one the runs built, and changes nothing a later run sees.
    index = _index(engine)
    with engine.begin() as conn:
        assert matching.ensure_index(conn) == 0  # current: nothing to do
        conn.execute(t.warehouse_state.delete())
        n = matching.ensure_index(conn)
        assert n == conn.execute(select(func.count()).select_from(t.contacts)).scalar_one()
    assert _index(engine) == index
    run(engine, [raw(6, name="Ayse KAYA", email="AYSE@firma.com.tr")])
    assert lead_of(engine)[raw(6).raw_id] == first[ayse.raw_id]
    engine.dispose()


def _index(engine: Engine) -> dict[str, list[tuple[Any, ...]]]:
    with engine.connect() as conn:
        return {
            table.name: sorted(tuple(r) for r in conn.execute(select(table)))
            for table in (t.contact_features, t.contact_blocks, t.match_term_counts)
        }


def test_resolution_thresholds_come_from_settings() -> None:
    import pytest
    from pydantic import ValidationError

    from flows.stages import match_engine, match_settings

    cfg = Settings.model_validate(
        {
            "resolution": {
                "link_probability": 0.99,
                "review_probability": 0.6,
                "memory_limit": "512MB",
                "temp_directory": "/tmp/spill",
            }
        }
    )
    m = match_settings(cfg)
    assert (m.link_probability, m.review_probability, m.max_block_size) == (0.99, 0.6, 100)
    eng = match_engine(cfg)
    assert (eng.memory_limit, eng.temp_directory) == ("512MB", "/tmp/spill")
    with pytest.raises(ValidationError, match="link_probability"):
        Settings.model_validate(
            {"resolution": {"link_probability": 0.4, "review_probability": 0.8}}
        )
    with pytest.raises(ValidationError, match="memory_limit"):
        Settings.model_validate({"resolution": {"memory_limit": "lots"}})


def test_common_blocking_keys_are_neither_fetched_nor_compared(warehouse_url: str) -> None:
    """A key more contacts share than a block may hold says nothing: counted over the warehouse,
    its contacts are not fetched as context, and the outcome is what comparing would give."""
    engine = make_engine(warehouse_url)
    upgrade(engine)
    small = Resolving(MatchSettings(max_block_size=3))
    webers = [
        raw(i, name="Hans Weber", postal_code="30159", email=f"hans{i}@gmx.de") for i in (1, 2, 3)
    ]
    with engine.begin() as conn:
        ps, _, _ = process_chunk(conn, webers, normalize_options(SETTINGS), load_rules(None), small)
        publish.publish(conn, ps, "run_test")
    paper = raw(4, name="WEBER Hans", postal_code="30159", street="Gartenweg 3")
    with engine.begin() as conn:
        contacts, _ = normalize_batch([paper], normalize_options(SETTINGS))
        new = match_table(contacts)
        context = matching.read_context(conn, new, small.settings.max_block_size)
        # name + postcode, surname + postcode, first name + postcode, first + last name: each
        # shared by the three Webers already, and now a fourth
        assert {k.partition(":")[0] for k in context.common} == {"np", "lp", "fp", "fl"}
        assert context.members.num_rows == 0
        assert matching.read_context(conn, new, 100).members.num_rows == 3
        # the leads a pending decision names are read whatever the keys say, each contact once
        webers_leads = {lk.lead_id for lk in ps.links}
        named = matching.read_context(conn, new, 3, extra_leads=webers_leads).members
        assert sorted(named.column("contact_id").to_pylist()) == sorted(
            c.contact_id for c in ps.contacts
        )
        both = matching.read_context(conn, new, 100, extra_leads=webers_leads).members
        assert both.num_rows == 3
        ps, _, _ = process_chunk(
            conn, [paper], normalize_options(SETTINGS), load_rules(None), small
        )
    assert [lk.rule for lk in ps.links] == ["new_lead"]
    engine.dispose()
