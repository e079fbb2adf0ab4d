"""Conversion is sticky: no rebuild removes an opportunity, and applied rules stay applied."""

from __future__ import annotations

from pathlib import Path

import pytest

from flows.cli import main
from tests.flows.test_pipeline import _use, count, snapshot
from tests.flows.test_rebuild import _rules_file


def test_applied_rules_survive_rebuilds_and_runs(
    prefect_api: None,
    sample_config: Path,
    warehouse_url: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    _use(sample_config, warehouse_url)
    cfg = str(sample_config)
    assert main(["run", "--config", cfg]) == 0
    rules = _rules_file(tmp_path)
    assert main(["rebuild", "--config", cfg, "--rules", str(rules), "--apply"]) == 0
    assert "recorded in the warehouse" in capsys.readouterr().out
    applied = snapshot(warehouse_url)
    opps = set(applied["opportunities"])
    assert count(warehouse_url, "select count(*) from applied_rules") == 1
    assert count(warehouse_url, "select count(*) from leads where rules_version <> '2027.1.0'") == 0

    # a plain rebuild recomputes everything from raw, keeps every opportunity, and scores with
    # the applied rules, not the config's
    assert main(["rebuild", "--config", cfg]) == 0
    assert set(snapshot(warehouse_url)["opportunities"]) == opps
    assert count(warehouse_url, "select count(*) from leads where rules_version <> '2027.1.0'") == 0
    assert (
        count(
            warehouse_url,
            "select count(*) from opportunities o left join leads l on l.opportunity_id = "
            "o.opportunity_id where l.lead_id is null",
        )
        == 0
    )
    # and so does the next run
    assert main(["run", "--config", cfg]) == 0
    assert set(snapshot(warehouse_url)["opportunities"]) == opps
    assert count(warehouse_url, "select count(*) from leads where rules_version <> '2027.1.0'") == 0
    capsys.readouterr()

    # the same rules_version with other content is refused, in one line, exit 2
    rules.write_text(rules.read_text().replace("min_score: 85", "min_score: 60"))
    assert main(["rebuild", "--config", cfg, "--rules", str(rules), "--apply"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "rules_version '2027.1.0'" in err
    sample_config.write_text(sample_config.read_text() + f"rules: {rules}\n")
    assert main(["run", "--config", cfg]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "new rules_version" in err
    assert set(snapshot(warehouse_url)["opportunities"]) == opps
