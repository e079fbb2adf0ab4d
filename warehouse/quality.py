"""Data-quality gate: Great Expectations suites over what is about to be published."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from transforms.qualify import STAGE_PROBABILITY, STATUSES

E164 = r"^\+[1-9][0-9]{6,14}$"
EMAIL = r"^[^@\s]+@[^@\s]+\.[^@\s]+$"

# (table, expectation type, kwargs, severity). Critical failures block the publish.
SUITES: list[tuple[str, str, dict[str, Any], str]] = [
    ("leads", "ExpectColumnValuesToNotBeNull", {"column": "lead_id"}, "critical"),
    ("leads", "ExpectColumnValuesToBeUnique", {"column": "lead_id"}, "critical"),
    (
        "leads",
        "ExpectColumnValuesToBeInSet",
        {"column": "status", "value_set": list(STATUSES)},
        "critical",
    ),
    (
        "leads",
        "ExpectColumnValuesToBeBetween",
        {"column": "score", "min_value": 0, "max_value": 100},
        "critical",
    ),
    ("leads", "ExpectColumnValuesToMatchRegex", {"column": "email", "regex": EMAIL}, "warning"),
    ("leads", "ExpectColumnValuesToMatchRegex", {"column": "phone", "regex": E164}, "critical"),
    ("opportunities", "ExpectColumnValuesToNotBeNull", {"column": "opportunity_id"}, "critical"),
    ("opportunities", "ExpectColumnValuesToBeUnique", {"column": "opportunity_id"}, "critical"),
    ("opportunities", "ExpectColumnValuesToBeUnique", {"column": "lead_id"}, "critical"),
    (
        "opportunities",
        "ExpectColumnValuesToBeInSet",
        {"column": "stage", "value_set": list(STAGE_PROBABILITY)},
        "critical",
    ),
    (
        "opportunities",
        "ExpectColumnValuesToBeBetween",
        {"column": "probability", "min_value": 0, "max_value": 100},
        "critical",
    ),
    (
        "opportunities",
        "ExpectColumnValuesToBeBetween",
        {"column": "amount", "min_value": 0},
        "warning",
    ),
    ("opportunities", "ExpectColumnValuesToNotBeNull", {"column": "close_date"}, "critical"),
]
ID_COLUMNS = {"leads": "lead_id", "opportunities": "opportunity_id"}


@dataclass(frozen=True)
class CheckResult:
    suite: str
    expectation: str
    column: str | None
    severity: str
    success: bool
    unexpected_count: int
    sample_ids: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class QualityReport:
    results: list[CheckResult]

    @property
    def critical_failures(self) -> list[CheckResult]:
        return [r for r in self.results if r.severity == "critical" and not r.success]

    @property
    def passed(self) -> bool:
        return not self.critical_failures

    def summary(self) -> str:
        bad = self.critical_failures
        if not bad:
            return f"{len(self.results)} checks, no critical failure"
        parts = [f"{r.suite}.{r.column}: {r.expectation} ({r.unexpected_count} rows)" for r in bad]
        return "critical data-quality failures: " + "; ".join(parts)


def check_frames(frames: Mapping[str, pd.DataFrame]) -> QualityReport:
    """Run every suite whose table is among `frames`; one result per expectation."""
    import great_expectations as gx
    import great_expectations.expectations as gxe
    from great_expectations.data_context.types.base import ProgressBarsConfig

    logging.getLogger("great_expectations").setLevel(logging.ERROR)
    ctx = gx.get_context(mode="ephemeral")
    ctx.variables.progress_bars = ProgressBarsConfig(globally=False)
    source = ctx.data_sources.add_pandas("leadflow")
    results: list[CheckResult] = []
    for table, frame in frames.items():
        specs = [s for s in SUITES if s[0] == table]
        if not specs:
            continue
        id_col = ID_COLUMNS.get(table)
        batch = (
            source.add_dataframe_asset(table)
            .add_batch_definition_whole_dataframe("all")
            .get_batch(batch_parameters={"dataframe": frame.reset_index(drop=True)})
        )
        for _, kind, kwargs, severity in specs:
            if kwargs.get("column") not in frame.columns:
                results.append(CheckResult(table, kind, kwargs.get("column"), severity, False, 0))
                continue
            expectation = getattr(gxe, kind)(**kwargs)
            res = batch.validate(
                expectation,
                result_format={"result_format": "COMPLETE"},
            )
            r = res.result or {}
            idx = list(
                r.get("partial_unexpected_index_list") or r.get("unexpected_index_list") or []
            )
            samples: list[str] = []
            if id_col and id_col in frame.columns:
                for i in idx[:10]:
                    pos = i if isinstance(i, int) else None
                    if pos is not None and pos < len(frame):
                        samples.append(str(frame[id_col].iloc[pos]))
            results.append(
                CheckResult(
                    suite=table,
                    expectation=kind,
                    column=kwargs.get("column"),
                    severity=severity,
                    success=bool(res.success),
                    unexpected_count=int(r.get("unexpected_count") or 0),
                    sample_ids=samples,
                )
            )
    return QualityReport(results)
