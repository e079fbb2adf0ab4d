"""`leadflow rebuild --rules`: re-score every lead, show the change, apply it in one transaction."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from sqlalchemy.engine import make_url

from flows.cli import main
from flows.stages import load_rules
from tests.flows.test_pipeline import _use, count, snapshot
from warehouse.marts import relation


def _rules_file(tmp_path: Path) -> Path:
    doc = load_rules(None).model_dump()
    doc["rules_version"] = "2027.1.0"
    doc["qualified"] = {"min_score": 85, "require": ["need", "market"]}
    for rule in doc["rules"]:
        if rule["name"] == "engagement_multi_source":
            rule["weight"] = 35  # reaching us through several channels now counts for a lot
    path = tmp_path / "rules_2027.yaml"
    path.write_text(yaml.safe_dump(doc, allow_unicode=True), encoding="utf-8")
    return path


def test_rebuild_shows_then_applies_and_never_deletes_an_opportunity(
    prefect_api: None,
    sample_config: Path,
    warehouse_url: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    _use(sample_config, warehouse_url)
    assert main(["run", "--config", str(sample_config)]) == 0
    before = snapshot(warehouse_url)
    rules = str(_rules_file(tmp_path))
    capsys.readouterr()

    assert main(["rebuild", "--config", str(sample_config), "--rules", rules]) == 0
    out = capsys.readouterr().out
    assert "Re-scoring 12 leads with rules 2027.1.0" in out
    assert "leads changing status: 2" in out
    assert "Qualified → Nurturing: 1" in out and "Nurturing → Qualified: 1" in out
    assert "new conversions (opportunities): 1" in out
    assert "opportunity kept): 1" in out
    assert "Nothing written" in out
    assert snapshot(warehouse_url) == before

    assert main(["rebuild", "--config", str(sample_config), "--rules", rules, "--apply"]) == 0
    assert "Applied in one transaction" in capsys.readouterr().out
    after = snapshot(warehouse_url)
    assert set(before["opportunities"]) < set(after["opportunities"])
    assert len(after["opportunities"]) == len(before["opportunities"]) + 1
    assert len(after["lead_status_history"]) == len(before["lead_status_history"]) + 2
    kept = count(
        warehouse_url,
        "select count(*) from lead_status_history h join leads l on l.lead_id = h.lead_id "
        "where h.from_status = 'Qualified' and h.to_status = 'Nurturing' "
        "and h.rules_version = '2027.1.0' and l.opportunity_id is not null "
        "and h.reason like '%opportunity opp_% kept%'",
    )
    assert kept == 1
    assert count(warehouse_url, "select count(*) from leads where rules_version <> '2027.1.0'") == 0
    leads_mart = relation(make_url(warehouse_url).get_dialect().name, "mart_leads_current")
    assert count(warehouse_url, f"select count(*) from {leads_mart} where is_converted") == 6  # noqa: S608 - a mart name constant

    # The same rules again: deterministic, nothing to change, no history rows added.
    assert main(["rebuild", "--config", str(sample_config), "--rules", rules, "--apply"]) == 0
    assert "leads changing status: 0" in capsys.readouterr().out
    again = snapshot(warehouse_url)
    assert again == after


def test_rebuild_refuses_a_broken_rules_file(
    sample_config: Path, sqlite_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _use(sample_config, sqlite_url)
    bad = tmp_path / "bad.yaml"
    bad.write_text("rules_version: x\nqualified: {min_score: 200}\ngrades: {A: 0}\nrules: []\n")
    assert main(["rebuild", "--config", str(sample_config), "--rules", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "bad.yaml: qualified.min_score: Input should be less than or equal to 100" in err
    missing = str(tmp_path / "nope.yaml")
    assert main(["rebuild", "--config", str(sample_config), "--rules", missing]) == 2
    assert "nope.yaml" in capsys.readouterr().err


def test_config_rules_file_is_validated_up_front(
    sample_config: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "rules.yaml"
    bad.write_text(yaml.safe_dump({**load_rules(None).model_dump(), "weights": {"need": 1}}))
    sample_config.write_text(sample_config.read_text() + f"rules: {bad}\n")
    assert main(["status", "--config", str(sample_config)]) == 2
    assert "rules: " in (err := capsys.readouterr().err) and "weights: unknown key" in err


def test_new_evidence_converts_a_nurtured_lead_dated_by_the_data(
    prefect_api: None, sample_config: Path, sqlite_url: str
) -> None:
    _use(sample_config, sqlite_url)
    assert main(["run", "--config", str(sample_config)]) == 0
    assert count(
        sqlite_url,
        "select count(*) from leads l "
        "where l.email = 'maria.schneider@schneider-logistik.de' and status = 'Nurturing'",
    )
    csv = sample_config.parent / "sources" / "fair_istanbul_2026.csv"
    csv.write_text(
        csv.read_text()
        + "Maria Schneider;maria.schneider@schneider-logistik.de;;Schneider Logistik GmbH;"
        "Einkauf;Hamburg;Deutschland;50.000 EUR;2 ay;Angebot;Evet\n"
    )
    assert main(["run", "--config", str(sample_config)]) == 0
    # Nurturing → Qualified, dated by the newest contact (the sheet's time), converted then too.
    changed = count(
        sqlite_url,
        "select count(*) from lead_status_history h join leads l on l.lead_id = h.lead_id "
        "where l.email = 'maria.schneider@schneider-logistik.de' "
        "and h.from_status = 'Nurturing' and h.to_status = 'Qualified' "
        "and h.changed_at = l.last_seen_at and l.converted_at = l.last_seen_at",
    )
    assert changed == 1
    assert (
        count(
            sqlite_url,
            "select count(*) from opportunity_stage_history s join leads l "
            "on l.opportunity_id = s.opportunity_id "
            "where l.email = 'maria.schneider@schneider-logistik.de' and s.from_stage is null "
            "and s.to_stage = 'Needs Analysis'",
        )
        == 1
    )
