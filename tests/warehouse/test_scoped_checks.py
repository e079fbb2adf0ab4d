"""The published-state checks of an incremental run read what the run changed, and still stop it
for every broken reference it makes, wherever in the warehouse the broken row sits; a row edited
outside any run is found by the full check."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from sqlalchemy import Connection, Engine, delete, select, text

from flows import stages
from flows.cli import main
from flows.settings import Settings
from tests.flows.test_pipeline import snapshot
from transforms.records import Link
from warehouse import publish, quality, runs
from warehouse import schema as t

Corruption = Callable[[Connection, publish.PublishSet], publish.PublishSet]


def _every(settings: Settings, n: int) -> Settings:
    q = settings.quality.model_copy(update={"full_checks_every": n})
    return settings.model_copy(update={"quality": q})


def _scoped_only(engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    """Runs check their scope even where it is most of the (tiny) sample tables: the first run
    counts as succeeded (its row counts are the baseline) and no share of a table is too big."""
    with engine.begin() as conn:
        runs.start_run(conn, "run_first", "pipeline", {})
        runs.finish_run(conn, "run_first", "succeeded", {})
    monkeypatch.setattr(quality, "WHOLE_TABLE_SHARE", 1e9)


def _untouched(conn: Connection, ps: publish.PublishSet, converted: bool, n: int = 1) -> list[str]:
    """`n` published leads this chunk leaves alone (with an open opportunity when `converted`)."""
    near = publish.Touched()
    near.add(ps)
    ld, o = t.leads, t.opportunities
    q = select(ld.c.lead_id).order_by(ld.c.lead_id)
    if converted:
        q = q.join(o, o.c.opportunity_id == ld.c.opportunity_id).where(
            o.c.stage.not_in(quality.CLOSED_STAGES)
        )
    else:
        q = q.where(ld.c.opportunity_id.is_(None))
    found = [k for k in conn.execute(q).scalars() if k not in near.leads][:n]
    assert len(found) == n, "the samples have too few leads outside the chunk"
    return found


def _link_to_deleted_lead(conn: Connection, ps: publish.PublishSet) -> publish.PublishSet:
    """A lead published by an earlier run is merged away; its contacts' links stay behind."""
    (gone,) = _untouched(conn, ps, converted=False)
    return dataclasses.replace(ps, merges=[*ps.merges, (gone, ps.leads[0].lead_id)])


def _opportunity_of_no_lead(conn: Connection, ps: publish.PublishSet) -> publish.PublishSet:
    """An earlier run's opportunity is handed to a lead that does not exist."""
    (owner,) = _untouched(conn, ps, converted=True)
    opp = conn.execute(
        select(t.leads.c.opportunity_id).where(t.leads.c.lead_id == owner)
    ).scalar_one()
    return dataclasses.replace(ps, reparented={**ps.reparented, opp: "lead_vanished"})


def _converted_without_opportunity(conn: Connection, ps: publish.PublishSet) -> publish.PublishSet:
    """One of the chunk's leads says it converted into an opportunity nobody wrote."""
    lead = ps.leads[0]
    conversion = ("opp_missing", "acc_missing", lead.last_seen_at)
    return dataclasses.replace(ps, conversions={**ps.conversions, lead.lead_id: conversion})


def _two_open_opportunities(conn: Connection, ps: publish.PublishSet) -> publish.PublishSet:
    """Two converted leads of earlier runs merge and neither opportunity is closed: the merged
    one keeps its lead id, which lead_merges maps to the survivor, still open."""
    merged, into = _untouched(conn, ps, converted=True, n=2)
    lk = t.lead_links
    moved = [
        Link(c, into, rule, score, {})
        for c, rule, score in conn.execute(
            select(lk.c.contact_id, lk.c.rule, lk.c.score).where(lk.c.lead_id == merged)
        )
    ]
    return dataclasses.replace(ps, links=[*ps.links, *moved], merges=[*ps.merges, (merged, into)])


CORRUPTIONS: dict[str, tuple[Corruption, str, str]] = {
    # name: (corruption, the failing suite, the column its check names)
    "link_to_deleted_lead": (_link_to_deleted_lead, "lead_links", "lead_exists"),
    "opportunity_of_no_lead": (_opportunity_of_no_lead, "opportunities", "lead_exists"),
    "converted_without_opportunity": (
        _converted_without_opportunity,
        "leads",
        "opportunity_exists",
    ),
    "two_open_opportunities": (_two_open_opportunities, "opportunities", "open_lead_id"),
}


def _expected_samples(conn: Connection, kind: str, ps: publish.PublishSet) -> set[str]:
    """The ids the failing check must name: exactly the rows the corruption broke."""
    lk, ld = t.lead_links, t.leads
    if kind == "link_to_deleted_lead":
        gone = ps.merges[-1][0]
        return set(conn.execute(select(lk.c.contact_id).where(lk.c.lead_id == gone)).scalars())
    if kind == "opportunity_of_no_lead":
        return {k for k, v in ps.reparented.items() if v == "lead_vanished"}
    if kind == "converted_without_opportunity":
        return {ps.leads[0].lead_id}
    merged, into = ps.merges[-1]
    return set(
        conn.execute(select(ld.c.opportunity_id).where(ld.c.lead_id.in_([merged, into]))).scalars()
    )


@pytest.mark.parametrize("whole", [False, True], ids=["scoped", "whole_in_parts_of_one_row"])
@pytest.mark.parametrize("kind", list(CORRUPTIONS))
def test_an_incremental_run_that_breaks_a_reference_is_rolled_back(
    kind: str,
    whole: bool,
    warehouse: tuple[Settings, Engine],
    warehouse_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Scoped, or over whole tables read a row at a time: the broken rows are counted and named
    over all parts, and one person's two open opportunities are still seen together."""
    settings, engine = warehouse
    settings = _every(settings, 1 if whole else 0)
    _scoped_only(engine, monkeypatch)
    monkeypatch.setattr(quality, "PART_ROWS", 1)
    corrupt, suite, column = CORRUPTIONS[kind]
    real = stages.process_chunk
    expected: set[str] = set()

    def bad_chunk(
        conn: Connection, *args: Any
    ) -> tuple[publish.PublishSet, stages.StageSeconds, int]:
        ps, timings, context = real(conn, *args)
        bad = corrupt(conn, ps)
        expected.update(_expected_samples(conn, kind, bad))
        return bad, timings, context

    monkeypatch.setattr(stages, "process_chunk", bad_chunk)
    before = snapshot(warehouse_url)
    run_id = f"run_{kind}"
    with pytest.raises(stages.QualityGateError) as err:
        stages.process_pending(engine, settings, run_id)
    assert f"{suite}.{column}" in str(err.value)
    assert snapshot(warehouse_url) == before, "the run was not rolled back"
    with engine.connect() as conn:
        failed = conn.execute(
            text(
                "select suite, column_name, unexpected_count, sample_ids from dq_results "
                "where run_id = :r and scope = 'published' and severity = 'critical' "
                "and not success"
            ),
            {"r": run_id},
        ).all()
    assert [(r.suite, r.column_name) for r in failed] == [(suite, column)]
    assert expected and set(_ids(failed[0].sample_ids)) == expected
    assert failed[0].unexpected_count == len(expected)


def test_a_run_reads_only_its_scope(warehouse: tuple[Settings, Engine]) -> None:
    """The frames of a scoped check hold the rows of the run's keys, and of nothing else."""
    _, engine = warehouse
    with engine.connect() as conn, conn.begin():
        lead, opp = conn.execute(
            select(t.leads.c.lead_id, t.leads.c.opportunity_id)
            .where(t.leads.c.opportunity_id.is_not(None))
            .order_by(t.leads.c.lead_id)
            .limit(1)
        ).one()
        contacts = set(
            conn.execute(
                select(t.lead_links.c.contact_id).where(t.lead_links.c.lead_id == lead)
            ).scalars()
        )
        every_lead = set(conn.execute(select(t.leads.c.lead_id)).scalars())
        counts = quality.table_counts(conn)
        now = datetime.now(UTC)
        touched = publish.Touched(leads={lead, "lead_merged_away"}, opportunities={opp})
        parts, _ = quality.published_frames(conn, now, counts, quality.Thresholds(), touched)
        frames = {name: _one(frames) for name, frames in parts.items()}
        whole_parts, _ = quality.published_frames(
            conn, now, counts, quality.Thresholds(), publish.Touched(everything=True), part_rows=7
        )
        whole = {name: list(frames) for name, frames in whole_parts.items()}
    assert set(frames["lead_links"].contact_id) == contacts
    assert list(frames["opportunities"].opportunity_id) == [opp]
    assert list(frames["leads"].lead_id) == [lead]
    # a whole table comes in parts of at most 7 rows (a lead's opportunities kept together)
    assert len(whole["lead_links"]) > 1
    assert all(len(f) <= 7 for f in whole["lead_links"])
    links = pd.concat(whole["lead_links"])
    assert len(links) == counts["lead_links"] > len(contacts)
    assert links.contact_id.is_unique
    assert len(pd.concat(whole["opportunities"])) == counts["opportunities"]
    # volume and freshness describe the warehouse either way; only a whole check counts every
    # table to compare the kept counts with (PostgreSQL)
    assert frames["freshness"].equals(_one(whole["freshness"]))
    scoped_volume, whole_volume = frames["volume"], _one(whole["volume"])
    assert scoped_volume.drop(columns="count_drift").equals(
        whole_volume.drop(columns="count_drift")
    )
    assert scoped_volume.count_drift.isna().all()
    pg = conn.dialect.name == "postgresql"
    assert list(whole_volume.count_drift.fillna(-1)) == [0 if pg else -1] * len(whole_volume)
    assert not quality.is_whole(touched, counts)
    assert quality.is_whole(publish.Touched(leads=every_lead), counts)


def test_a_hand_edit_is_found_by_the_full_check(
    warehouse: tuple[Settings, Engine],
    warehouse_url: str,
    sample_config: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    settings, engine = warehouse
    _scoped_only(engine, monkeypatch)
    stages.process_pending(engine, _every(settings, 0), "run_second")
    # Somebody deletes a lead by hand, outside any run: its links now point at nothing.
    with engine.begin() as conn:
        lk = t.lead_links
        gone = conn.execute(select(lk.c.lead_id).order_by(lk.c.lead_id).limit(1)).scalar_one()
        orphans = set(conn.execute(select(lk.c.contact_id).where(lk.c.lead_id == gone)).scalars())
        conn.execute(delete(t.leads).where(t.leads.c.lead_id == gone))
    # A run that changes nothing near it does not look there…
    stages.process_pending(engine, _every(settings, 0), "run_scoped")
    # …the full check does: `leadflow check` fails naming the links, and records what it found.
    capsys.readouterr()
    assert main(["check", "--config", str(sample_config)]) == 1
    err = capsys.readouterr().err
    assert "lead_links.lead_exists" in err
    with engine.connect() as conn:
        found = conn.execute(
            text(
                "select run_id, sample_ids from dq_results where suite = 'lead_links' "
                "and column_name = 'lead_exists' and not success"
            )
        ).all()
    assert len(found) == 1 and found[0].run_id.startswith("check-")
    assert set(_ids(found[0].sample_ids)) == orphans
    # …and so does every n-th run (here every run), which then publishes nothing.
    before = snapshot(warehouse_url)
    with pytest.raises(stages.QualityGateError, match="lead_links.lead_exists"):
        stages.process_pending(engine, _every(settings, 1), "run_full")
    assert snapshot(warehouse_url) == before


def test_every_nth_run_checks_the_whole_state(warehouse: tuple[Settings, Engine]) -> None:
    _, engine = warehouse
    with engine.begin() as conn:
        assert not quality.full_check_due(conn, 0)
        assert quality.full_check_due(conn, 3)  # no run succeeded yet: the first one checks all
        for i in range(4):
            conn.execute(
                t.pipeline_runs.insert().values(
                    run_id=f"r{i}",
                    flow="pipeline",
                    status="succeeded" if i != 1 else "failed",
                    started_at=datetime.now(UTC),
                    params={},
                    stats={},
                )
            )
        # three succeeded: due with every 3 and every 1, not with every 2 (a failed run never counts)
        assert quality.full_check_due(conn, 3) and quality.full_check_due(conn, 1)
        assert not quality.full_check_due(conn, 2)


def _one(frames: Iterable[pd.DataFrame]) -> pd.DataFrame:
    (frame,) = frames
    return frame


def _ids(value: Any) -> list[str]:
    """sample_ids read through a plain text query: SQLite hands the JSON back as a string."""
    return list(json.loads(value) if isinstance(value, str) else value)
