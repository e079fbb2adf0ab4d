"""A critical data-quality failure stops the publish: the live tables stay exactly as they were."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from flows import stages
from flows.cli import main
from tests.flows.test_pipeline import _use, snapshot
from warehouse import db


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
    before = snapshot(warehouse_url)
    real = stages.qualify_leads

    def corrupt(*args: Any, **kwargs: Any) -> Any:
        res = real(*args, **kwargs)
        bad = [dataclasses.replace(o, probability=150) for o in res.opportunities]
        return dataclasses.replace(res, opportunities=bad)

    monkeypatch.setattr(stages, "qualify_leads", corrupt)
    csv.write_text(original)
    assert main(["run", "--config", str(sample_config)]) == 1
    err = capsys.readouterr().err
    assert "nothing published" in err and "probability" in err
    after = snapshot(warehouse_url)
    # The raw landing is committed (it is the source of truth to retry from); nothing derived moved.
    for table in ("contacts", "leads", "lead_links", "opportunities", "accounts"):
        assert after[table] == before[table], table
    engine = db.make_engine(warehouse_url)
    with engine.connect() as conn:
        failed = conn.execute(text("select error from pipeline_runs where status='failed'")).all()
        dq = conn.execute(text("select count(*) from dq_results where not success")).scalar_one()
    engine.dispose()
    assert len(failed) == 1 and "probability" in failed[0][0]
    assert dq >= 1
    # Once the cause is gone the pending records are published on the next run.
    monkeypatch.setattr(stages, "qualify_leads", real)
    assert main(["run", "--config", str(sample_config)]) == 0
    assert snapshot(warehouse_url)["leads"] != before["leads"]
