"""A critical data-quality failure stops the publish: the live tables stay exactly as they were."""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from flows import stages
from flows.cli import main
from tests.flows.test_pipeline import _use, snapshot
from transforms.records import Link
from warehouse import db, publish


def _bad_batch(ps: publish.PublishSet) -> publish.PublishSet:
    """A probability of 1.5, a lead id twice, and a link to a lead that does not exist."""
    opp = dataclasses.replace(ps.opportunities[0], probability=1.5)  # type: ignore[arg-type]
    twin = dataclasses.replace(ps.leads[0], full_name="Somebody Else")
    first = ps.links[0]
    orphan = Link(first.contact_id, "lead_does_not_exist", first.rule, first.score, {})
    return dataclasses.replace(
        ps,
        opportunities=[opp, *ps.opportunities[1:]],
        leads=[*ps.leads, twin],
        links=[orphan, *ps.links[1:]],
    )


def _artifact_markdown(run_id: str) -> str:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    key = f"data-quality-{run_id}".lower().replace("_", "-")
    with get_client(sync_client=True) as client:
        found = client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key]))
        )
    assert found, f"no artifact {key}"
    return str(found[0].data)


def test_bad_batch_fails_and_publishes_nothing(
    prefect_api: None,
    sample_config: Path,
    warehouse_url: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    _use(sample_config, warehouse_url)
    csv = sample_config.parent / "sources" / "fair_istanbul_2026.csv"
    original = csv.read_text()
    # First a good run with part of the data, so there is a published state to protect.
    csv.write_text(original.splitlines()[0] + "\n")
    assert main(["run", "--config", str(sample_config)]) == 0
    out = capsys.readouterr().out
    docs = re.search(r"Data Docs: (\S+)", out)
    assert docs and Path(docs[1]).is_file() and "leadflow_docs" in docs[1]
    before = snapshot(warehouse_url)
    real = stages.process_chunk

    def bad_chunk(*args: Any) -> tuple[publish.PublishSet, stages.StageSeconds, int]:
        ps, timings, context = real(*args)
        return _bad_batch(ps), timings, context

    monkeypatch.setattr(stages, "process_chunk", bad_chunk)
    csv.write_text(original)
    assert main(["run", "--config", str(sample_config)]) == 1
    err = capsys.readouterr().err
    assert "nothing published" in err
    assert "opportunities.probability" in err and "leads.lead_id" in err
    failed_docs = re.search(r"Data Docs: (\S+?)\)", err)
    assert failed_docs and Path(failed_docs[1]).is_file()
    # The site shows the failed validation of the staged opportunities, with the failing column.
    # Once, in full: the failed suite's pass-or-fail result gave way to the one with its values.
    site = Path(failed_docs[1]).parent
    pages = list(site.glob("validations/staged/opportunities/**/*.html"))
    assert len(pages) == 1, pages
    page = pages[0].read_text(encoding="utf-8")
    assert "probability" in page and "1.5" in page
    assert len(list(site.glob("validations/staged/contacts/**/*.html"))) == 1  # a suite that passed
    assert "Failed" in Path(failed_docs[1]).read_text(encoding="utf-8")
    after = snapshot(warehouse_url)
    # The raw landing is committed (it is the source of truth to retry from); nothing derived moved.
    for table in ("contacts", "leads", "lead_links", "opportunities", "accounts", "lead_merges"):
        assert after[table] == before[table], table
    engine = db.make_engine(warehouse_url)
    with engine.connect() as conn:
        failed = conn.execute(
            text("select run_id, error from pipeline_runs where status='failed'")
        ).all()
        critical = conn.execute(
            text(
                "select suite || '.' || column_name, unexpected_count, sample_ids from dq_results "
                "where run_id = :r and severity = 'critical' and not success"
            ),
            {"r": failed[0].run_id},
        ).all()
        passed = conn.execute(
            text("select count(*) from dq_results where run_id = :r and success"),
            {"r": failed[0].run_id},
        ).scalar_one()
    assert len(failed) == 1 and "probability" in failed[0].error
    found = {c: (n, json.loads(s) if isinstance(s, str) else s) for c, n, s in critical}
    assert {"opportunities.probability", "leads.lead_id"} <= set(found)
    # counted and sampled: the bad opportunity is the one named
    bad_opportunity = found["opportunities.probability"]
    assert bad_opportunity[0] == 1 and len(bad_opportunity[1]) == 1, bad_opportunity
    assert found["leads.lead_id"][0] == 2  # the lead and its twin
    assert passed > 20  # the suites that passed are recorded too
    table = _artifact_markdown(failed[0].run_id)
    assert "| FAIL | critical | staged | opportunities | probability |" in table

    # Once the cause is gone the pending records are published on the next run.
    monkeypatch.setattr(stages, "process_chunk", real)
    assert main(["run", "--config", str(sample_config)]) == 0
    assert snapshot(warehouse_url)["leads"] != before["leads"]
    with engine.connect() as conn:
        runs = conn.execute(text("select run_id from pipeline_runs")).scalars().all()
        checked = set(conn.execute(text("select distinct run_id from dq_results")).scalars())
    engine.dispose()
    assert len(runs) == 3 and set(runs) <= checked, "dq_results rows for every run"
