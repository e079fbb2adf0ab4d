"""The quality gate on the real warehouse: each kind of bad batch is stopped, nothing is published."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, func, select, text

from flows import stages
from flows.settings import Settings
from tests.flows.test_pipeline import snapshot
from transforms.records import Link
from warehouse import load, publish, runs
from warehouse.schema import raw_contacts

Corruption = Callable[[publish.PublishSet], publish.PublishSet]


def _probability(ps: publish.PublishSet) -> publish.PublishSet:
    bad = [dataclasses.replace(o, probability=1.5) for o in ps.opportunities[:1]]  # type: ignore[arg-type]
    return dataclasses.replace(ps, opportunities=bad + ps.opportunities[1:])


def _duplicate_lead(ps: publish.PublishSet) -> publish.PublishSet:
    twin = dataclasses.replace(ps.leads[0], full_name="Somebody Else")
    return dataclasses.replace(ps, leads=[*ps.leads, twin])


def _missing_lead(ps: publish.PublishSet) -> publish.PublishSet:
    first = ps.links[0]
    orphan = Link(first.contact_id, "lead_does_not_exist", first.rule, first.score, {})
    return dataclasses.replace(ps, links=[orphan, *ps.links[1:]])


CORRUPTIONS: dict[str, tuple[Corruption, str, str]] = {
    # name: (corruption, the failing suite, the column its check names)
    "probability": (_probability, "opportunities", "probability"),
    "duplicate_lead": (_duplicate_lead, "leads", "lead_id"),
    "missing_lead": (_missing_lead, "lead_links", "lead_exists"),
}


def test_bad_batches_are_stopped_then_the_fixed_run_publishes(
    warehouse: tuple[Settings, Engine],
    warehouse_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    settings, engine = warehouse
    real = stages.process_chunk
    before = snapshot(warehouse_url)
    for kind, (corrupt, suite, column) in CORRUPTIONS.items():

        def bad_chunk(
            *args: Any, corrupt: Corruption = corrupt
        ) -> tuple[publish.PublishSet, stages.StageSeconds, int]:
            ps, timings, context = real(*args)
            return corrupt(ps), timings, context

        monkeypatch.setattr(stages, "process_chunk", bad_chunk)
        run_id = f"run_bad_{kind}"
        with pytest.raises(stages.QualityGateError) as err:
            stages.process_pending(engine, settings, run_id)
        assert f"{suite}.{column}" in str(err.value), kind
        assert err.value.docs is not None and err.value.docs.is_file()
        assert snapshot(warehouse_url) == before, kind
        with engine.connect() as conn:
            failed = conn.execute(
                text(
                    "select severity, unexpected_count, sample_ids from dq_results "
                    "where run_id = :r and suite = :s and column_name = :c and not success"
                ),
                {"r": run_id, "s": suite, "c": column},
            ).all()
        assert failed and failed[0].severity == "critical" and failed[0].unexpected_count >= 1
        assert _ids(failed[0].sample_ids), "a failing check names the rows that failed it"

    # With the cause gone, the same pending records are published; warnings do not block.
    monkeypatch.setattr(stages, "process_chunk", real)
    with engine.begin() as conn:  # the first run counts as published: the volume baseline
        runs.start_run(conn, "run_first", "pipeline", {})
        runs.finish_run(conn, "run_first", "succeeded", {})
    stats = stages.process_pending(engine, settings, "run_fixed")
    assert stats.raw_processed > 0 and snapshot(warehouse_url) != before
    assert Path(str(stats.data_docs)).is_file()
    with engine.connect() as conn:
        rows = conn.execute(
            text(
                "select suite, expectation, column_name, severity, success, scope, sample_ids, "
                "observed_value from dq_results where run_id = 'run_fixed'"
            )
        ).all()
    suites = {(r.scope, r.suite) for r in rows}
    for table in ("raw_contacts", "contacts", "leads", "lead_links", "opportunities", "accounts"):
        assert ("staged", table) in suites, table
    for check in ("lead_links", "opportunities", "volume", "freshness"):
        assert ("published", check) in suites, check
    assert all(r.success for r in rows if r.severity == "critical")
    # Freshness names exactly the sources whose newest record is older than the window; it only
    # warns (the mailbox and form samples are months old, and the run still published).
    with engine.connect() as conn:
        latest = conn.execute(
            select(raw_contacts.c.source, func.max(raw_contacts.c.received_at)).group_by(
                raw_contacts.c.source
            )
        ).all()
    window = timedelta(hours=settings.quality.freshness_hours)
    old = {s for s, at in latest if datetime.now(UTC) - load.utc(at) > window}
    fresh = next(r for r in rows if r.suite == "freshness")
    assert old and fresh.severity == "warning" and not fresh.success
    assert set(_ids(fresh.sample_ids)) == old
    # Volume: the tables named by the failed check really moved by more than half.
    with engine.connect() as conn:
        first: dict[str, float] = dict(
            conn.execute(
                text(
                    "select column_name, observed_value from dq_results "
                    "where run_id = 'run_first' and expectation = 'row_count'"
                )
            ).all()
        )
    now = {r.column_name: r.observed_value for r in rows if r.expectation == "row_count"}
    jumped = {k for k in now if abs(now[k] - first[k]) / first[k] > 0.5}
    volume = next(r for r in rows if r.suite == "volume" and r.expectation != "row_count")
    assert jumped and not volume.success and set(_ids(volume.sample_ids)) == jumped


def _ids(value: Any) -> list[str]:
    """sample_ids read through a plain text query: SQLite hands the JSON back as a string."""
    return list(json.loads(value) if isinstance(value, str) else value)
