"""Pure presentation helpers: evidence of any shape as comparisons, funnels as inline SVG."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from typing import Any

from markupsafe import Markup, escape

from transforms.resolve import SURVIVORSHIP

# Field → survivorship rule, for the golden record's provenance column.
RULE_OF_FIELD = {f: policy for fields, policy in SURVIVORSHIP for f in fields}

_NAME_KEYS = ("name", "comparison", "comparison_name", "output_column_name", "column", "field")
_LEVEL_KEYS = ("level", "label", "comparison_level", "label_for_charts", "value")
_WEIGHT_KEYS = ("weight", "match_weight", "log2_bayes_factor", "log_bf")
_BF_KEYS = ("bayes_factor", "bf")
_TOTAL_WEIGHT = ("match_weight", "weight", "total_weight")
_TOTAL_PROB = ("match_probability", "probability")
_LIST_KEYS = ("comparisons", "fields", "levels", "comparison_levels")


def _first(d: Mapping[str, Any], keys: Sequence[str]) -> Any:
    for k in keys:
        if k in d and d[k] is not None:
            return d[k]
    return None


def _number(v: Any) -> float | None:
    if isinstance(v, bool):
        return None
    if isinstance(v, int | float) and math.isfinite(v):
        return float(v)
    return None


def comparisons(evidence: Any) -> dict[str, Any]:
    """Evidence JSON as a list of comparisons (name, level, weight, other keys) and totals.

    Accepts the shapes a link or review may carry: {"fields": {name: level}}, {"fields": {name:
    {"level": …, "weight": …}}}, {"comparisons": [{"name": …, "level": …, "bayes_factor": …}]},
    with totals (weight / match_weight, probability / match_probability, model version) beside
    them; whatever else is there is listed as it is.
    """
    if isinstance(evidence, str):
        try:
            evidence = json.loads(evidence)
        except ValueError:
            return {"rows": [], "totals": {}, "other": {"evidence": evidence}}
    if not isinstance(evidence, Mapping):
        return {"rows": [], "totals": {}, "other": {"evidence": evidence} if evidence else {}}
    rows: list[dict[str, Any]] = []
    used: set[str] = set()
    for key in _LIST_KEYS:
        part = evidence.get(key)
        if isinstance(part, Mapping):
            used.add(key)
            for name, v in part.items():
                rows.append(_comparison(str(name), v))
        elif isinstance(part, list):
            used.add(key)
            for i, v in enumerate(part):
                name = _first(v, _NAME_KEYS) if isinstance(v, Mapping) else None
                rows.append(_comparison(str(name if name is not None else i + 1), v))
    totals: dict[str, Any] = {}
    w = _first(evidence, _TOTAL_WEIGHT)
    if w is not None:
        totals["match weight"] = w
    p = _first(evidence, _TOTAL_PROB)
    if p is not None:
        totals["probability"] = p
    for k in ("model_version", "model", "rules_version"):
        if k in evidence:
            totals[k.replace("_", " ")] = evidence[k]
    skip = (
        used | set(_TOTAL_WEIGHT) | set(_TOTAL_PROB) | {"model_version", "model", "rules_version"}
    )
    other = {k: v for k, v in evidence.items() if k not in skip}
    return {"rows": rows, "totals": totals, "other": other}


def _comparison(name: str, v: Any) -> dict[str, Any]:
    if not isinstance(v, Mapping):
        return {"name": name, "level": v, "weight": None, "extra": {}}
    level = _first(v, _LEVEL_KEYS)
    weight = _number(_first(v, _WEIGHT_KEYS))
    bf = _number(_first(v, _BF_KEYS))
    if weight is None and bf is not None and bf > 0:
        weight = math.log2(bf)
    skip = set(_NAME_KEYS) | set(_LEVEL_KEYS) | set(_WEIGHT_KEYS)
    extra = {k: x for k, x in v.items() if k not in skip}
    return {"name": name, "level": level, "weight": weight, "extra": extra}


def pretty_json(value: Any) -> str:
    """A raw payload for reading: indented JSON when it parses, the text as it is otherwise."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            return value
    return json.dumps(value, indent=2, ensure_ascii=False, sort_keys=True, default=str)


def rate(num: int, den: int) -> str:
    return f"{100.0 * num / den:.1f} %" if den else "–"


_STEPS = (
    ("contacts", "contacts"),
    ("leads", "leads"),
    ("qualified", "qualified"),
    ("opportunities", "opportunities"),
)


def funnel_svg(rows: Sequence[Mapping[str, Any]], label_key: str, steps: Sequence[str]) -> Markup:
    """Horizontal funnel bars per row (a source, a week), with each step's conversion rate from
    the step before; every label escaped."""
    bar_h, gap, label_w, width = 14, 4, 150, 620
    plot_w = width - label_w - 150
    peak = max([int(r.get(s, 0) or 0) for r in rows for s in steps] or [1]) or 1
    group_h = len(steps) * (bar_h + gap) + 14
    height = max(group_h * len(rows), 20) + 20
    parts = [
        f'<svg class="funnel" role="img" xmlns="http://www.w3.org/2000/svg" '
        f'viewBox="0 0 {width} {height}" width="{width}" height="{height}">',
        f"<title>{escape(' → '.join(steps))} by {escape(label_key)}</title>",
    ]
    y = 10
    for r in rows:
        parts.append(
            f'<text class="group" x="0" y="{y + bar_h}">{escape(str(r.get(label_key, "")))}</text>'
        )
        prev: int | None = None
        for i, s in enumerate(steps):
            n = int(r.get(s, 0) or 0)
            w = max(1.0, plot_w * n / peak) if n else 0.0
            by = y + i * (bar_h + gap)
            conv = f" ({rate(n, prev)})" if prev is not None else ""
            parts.append(
                f'<rect class="step step{i}" x="{label_w}" y="{by}" width="{w:.1f}" '
                f'height="{bar_h}"><title>{escape(s)}: {n}{escape(conv)}</title></rect>'
            )
            parts.append(
                f'<text class="value" x="{label_w + w + 4:.1f}" y="{by + bar_h - 3}">'
                f"{escape(s)} {n}{escape(conv)}</text>"
            )
            prev = n
        y += group_h
    parts.append("</svg>")
    return Markup("".join(parts))
