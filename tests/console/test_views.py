"""The console's pure presentation helpers: evidence of any shape, funnels as SVG, search parsing."""

from __future__ import annotations

import math

import pytest

from console.app import _safe_next, parse_query
from console.auth import Keys, clean_steward
from console.views import comparisons, funnel_svg, rate


def test_todays_evidence_lists_each_field_level_and_the_totals() -> None:
    ev = comparisons(
        {"fields": {"first": "first_exact", "postal": "postal_same"}, "probability": 0.93}
    )
    assert [(r["name"], r["level"], r["weight"]) for r in ev["rows"]] == [
        ("first", "first_exact", None),
        ("postal", "postal_same", None),
    ]
    assert ev["totals"] == {"probability": 0.93} and ev["other"] == {}


def test_splink_shaped_evidence_shows_levels_weights_and_the_model() -> None:
    ev = comparisons(
        {
            "comparisons": [
                {"name": "email", "level": "exact", "bayes_factor": 256.0},
                {"comparison_name": "name", "label": "jaro_winkler >= 0.9", "match_weight": 4.5},
                {
                    "output_column_name": "city",
                    "comparison_level": "else",
                    "log2_bayes_factor": -1.2,
                    "tf_adjusted": True,
                },
            ],
            "match_weight": 11.3,
            "match_probability": 0.9996,
            "model_version": "splink-2026-12-01",
        }
    )
    rows = [(r["name"], r["level"], r["weight"]) for r in ev["rows"]]
    assert rows == [
        ("email", "exact", math.log2(256.0)),
        ("name", "jaro_winkler >= 0.9", 4.5),
        ("city", "else", -1.2),
    ]
    assert ev["rows"][2]["extra"] == {"tf_adjusted": True}
    assert ev["totals"] == {
        "match weight": 11.3,
        "probability": 0.9996,
        "model version": "splink-2026-12-01",
    }


def test_odd_evidence_is_listed_not_lost() -> None:
    assert comparisons("not json")["other"] == {"evidence": "not json"}
    assert comparisons(None) == {"rows": [], "totals": {}, "other": {}}
    ev = comparisons(
        {"fields": {"a": {"level": "x", "weight": "NaN-ish"}}, "decision": "must_link"}
    )
    assert ev["rows"][0]["weight"] is None and ev["other"] == {"decision": "must_link"}


def test_funnel_svg_escapes_labels_and_shows_conversion_rates() -> None:
    svg = str(
        funnel_svg(
            [
                {
                    "source": "<script>x</script>",
                    "contacts": 10,
                    "leads": 8,
                    "qualified": 2,
                    "opportunities": 1,
                }
            ],
            "source",
            ["contacts", "leads", "qualified", "opportunities"],
        )
    )
    assert "<script>" not in svg and "&lt;script&gt;" in svg
    assert "leads 8 (80.0 %)" in svg and "qualified 2 (25.0 %)" in svg and "(50.0 %)" in svg
    assert svg.startswith("<svg") and svg.endswith("</svg>")
    assert rate(1, 0) == "–"


@pytest.mark.parametrize(
    ("q", "expected"),
    [
        ("Hans.Weber@GMX.de", {"email_key": "hans.weber@gmx.de"}),
        ("+49 511 1234567", {"phone": "+495111234567"}),
        ("0511 1234567", {"phone": "+495111234567"}),
        ("Ayşe Kaya", {"name": "ayse kaya", "company": "ayse kaya"}),
        ("   ", {}),
    ],
)
def test_a_query_becomes_the_pipelines_own_keys(q: str, expected: dict[str, str]) -> None:
    assert parse_query(q, "DE") == expected


def test_sessions_are_signed_and_expire_and_csrf_is_per_session() -> None:
    keys = Keys("a-token-of-enough-length")
    cookie = keys.new_session("Sam", now=1000.0)
    s = keys.read_session(cookie, now=1001.0)
    assert s is not None and s.steward == "Sam"
    assert keys.read_session(cookie, now=1000.0 + 13 * 3600) is None  # expired
    payload, sig = cookie.rsplit(".", 1)
    assert keys.read_session(payload + "." + "0" * len(sig), now=1001.0) is None
    assert Keys("another-token-entirely").read_session(cookie, now=1001.0) is None
    other = keys.read_session(keys.new_session("Sam", now=1000.0), now=1001.0)
    assert other is not None and keys.csrf_token(s) != keys.csrf_token(other)
    assert keys.csrf_ok(s, keys.csrf_token(s)) and not keys.csrf_ok(s, keys.csrf_token(other))
    assert clean_steward("  Sam\x00 \n Steward ") == "Sam Steward" and clean_steward("\x07") is None


def test_redirects_stay_on_this_site() -> None:
    for bad in ("//evil.example/", "https://evil.example/", "/\\evil.example", "", None):
        assert _safe_next(bad) == "/"
    assert _safe_next("/leads?q=x") == "/leads?q=x"
