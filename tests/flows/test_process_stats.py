"""Processing's counts are a typed record; `as_dict()` is the shape the run log keeps
(`pipeline_runs.stats["process"]`), the command line prints and dashboards read."""

from __future__ import annotations

from flows.stages import ProcessStats, ReplayCounts, StageSeconds


def test_the_run_log_keeps_the_counts_under_their_names() -> None:
    stats = ProcessStats(raw_processed=5, contacts=4, rejects=1, data_docs="docs/run/index.html")
    stats.opportunity_updates = {"opportunity_updates_read": 3, "opportunity_stage_moves": 2}
    stats.timings.add(StageSeconds(normalize=0.5, resolve=1.25))
    stats.timings.add(StageSeconds(normalize=0.25, publish=2.0004))
    d = stats.as_dict()
    assert d["raw_processed"] == 5 and d["contacts"] == 4 and d["rejects"] == 1
    assert d["data_docs"] == "docs/run/index.html"
    # the CRM updates' counts sit beside the others, as the run log has always held them
    assert d["opportunity_updates_read"] == 3 and d["opportunity_stage_moves"] == 2
    assert "opportunity_updates" not in d and "replay" not in d
    # failures only when there were some; a replay's counts only for a replay
    assert "opportunity_update_failures" not in d
    assert not any(k.startswith("replay_") for k in d)
    assert d["timings"] == {
        "normalize": 0.75,
        "resolve": 1.25,
        "qualify": 0.0,
        "validate": 0.0,
        "publish": 2.0,
        "marts": 0.0,
        "docs": 0.0,
    }


def test_a_replay_and_a_failed_crm_read_show_in_the_run_log() -> None:
    stats = ProcessStats(opportunity_update_failures=["crm: HTTP 503"])
    stats.replay = ReplayCounts(candidates=7, not_replayable=2, reread_sources=1, extract_closed=3)
    d = stats.as_dict()
    assert d["opportunity_update_failures"] == ["crm: HTTP 503"]
    assert (
        d["replay_candidates"],
        d["replay_not_replayable"],
        d["replay_reread_sources"],
        d["replay_extract_closed"],
    ) == (7, 2, 1, 3)
