"""The `model` commands and `rebuild --model`: train a match model on the warehouse's contacts,
show it, activate it, and see (or apply) how the leads change under it."""

from __future__ import annotations

import argparse
import sys
import uuid
from datetime import UTC, datetime
from typing import Any

from flows.settings import Settings

EXIT_CONFIG = 2


def add_arguments(sub: Any, command: Any) -> None:
    md = command("model", "the match model: train it on the warehouse, show or activate one")
    md.add_argument("action", choices=["train", "show", "list", "activate"])
    md.add_argument("version", nargs="?", default=None, help="show, activate: the model version")
    md.add_argument("--sample", type=int, default=None, help="train: on a sample of N contacts")
    md.add_argument("--seed", type=int, default=42, help="train: the sample's and u's seed")
    md.add_argument("--activate", action="store_true", help="train: activate the new model")


def model_command(args: argparse.Namespace, settings: Settings) -> int:
    from warehouse import db, matching

    engine = db.make_engine(settings.warehouse.url)
    try:
        db.upgrade(engine)
        if args.action == "train":
            return _train(engine, settings, args.sample, args.seed, args.version, args.activate)
        if args.action == "list":
            with engine.connect() as conn:
                rows = matching.model_versions(conn)
                active = matching.active_model(conn).version
            print(_table(_versions(rows, active)))
            return 0
        if args.action == "show":
            with engine.connect() as conn:
                model = (
                    matching.model_named(conn, args.version)
                    if args.version
                    else matching.active_model(conn)
                )
            _show(model)
            return 0
        if not args.version:
            print("leadflow: model activate: name the version to activate", file=sys.stderr)
            return EXIT_CONFIG
        with engine.begin() as conn:
            matching.activate_model(conn, args.version)
        print(
            f"Model {args.version} is active: the next runs score new contacts with it. Existing "
            f"links stay as scored; `leadflow rebuild --model {args.version}` shows what would "
            "change if every lead were resolved again with it."
        )
        return 0
    except KeyError as exc:
        print(f"leadflow: model: no model version {exc.args[0]!r}", file=sys.stderr)
        return EXIT_CONFIG
    finally:
        engine.dispose()


def _versions(rows: list[dict[str, Any]], active: str) -> list[dict[str, Any]]:
    from transforms.scoring import default_model

    shipped = default_model()
    out = [
        {
            "version": shipped.version,
            "trained": "shipped with leadflow",
            "contacts": "",
            "active": "yes" if active == shipped.version else "",
        }
    ]
    for r in rows:
        out.append(
            {
                "version": r["version"],
                "trained": str(r["trained_at"])[:19],
                "contacts": r["stats"].get("contacts", ""),
                "active": "yes" if r["version"] == active else "",
            }
        )
    return out


def _train(
    engine: Any,
    settings: Settings,
    sample: int | None,
    seed: int,
    version: str | None,
    activate: bool,
) -> int:
    from flows.stages import match_engine
    from transforms import scoring
    from warehouse import matching

    with engine.begin() as conn:
        matching.ensure_index(conn)
        table = matching.training_table(conn, sample, seed)
        start = matching.active_model(conn)
    if table.num_rows < 1000:
        print(
            f"leadflow: model train: {table.num_rows} contacts are too few to train on (at least "
            "1000); the shipped model stays in use",
            file=sys.stderr,
        )
        return EXIT_CONFIG
    spec, stats = scoring.train(table, start, seed=seed, engine=match_engine(settings))
    now = datetime.now(UTC)
    name = version or f"m{now:%Y%m%d%H%M%S}"
    with engine.begin() as conn:
        matching.save_model(conn, name, spec, stats.as_dict(), now)
        if activate:
            matching.activate_model(conn, name)
    print(
        f"Model {name} trained on {stats.contacts} contacts (λ = "
        f"{stats.probability_two_random_records_match:.3g}; m by expectation maximisation over "
        f"{', '.join(stats.em_rules) or 'no rule with enough pairs'})"
        + (": active." if activate else f"; `leadflow model activate {name}` to use it.")
    )
    return 0


def _show(model: Any) -> None:
    from transforms.scoring import describe

    print(
        f"Model {model.version}: prior (λ) {model.spec['probability_two_random_records_match']:.3g}"
    )
    rows = [
        {
            "comparison": d["comparison"],
            "level": d["level"],
            "m": "" if d["m"] is None else f"{d['m']:.4f}",
            "u": "" if d["u"] is None else f"{d['u']:.6f}",
            "match_weight": "" if d["match_weight"] is None else f"{d['match_weight']:+.2f}",
            "tf": "yes" if d["tf_adjusted"] else "",
        }
        for d in describe(model)
    ]
    print(_table(rows))


def _table(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return ""
    cols = list(rows[0])
    width = {c: max(len(c), *(len(str(r[c])) for r in rows)) for c in cols}
    lines = ["  ".join(c.ljust(width[c]) for c in cols), "  ".join("-" * width[c] for c in cols)]
    lines += ["  ".join(str(r[c]).ljust(width[c]) for c in cols) for r in rows]
    return "\n".join(lines)


def remodel_command(settings: Settings, version: str, apply: bool) -> int:
    """`rebuild --model VERSION [--apply]`: resolve every contact again under that model."""
    from flows.stages import QualityGateError, remodel
    from warehouse import db, matching

    engine = db.make_engine(settings.warehouse.url)
    run_id = f"run_{uuid.uuid4().hex[:20]}"
    try:
        db.upgrade(engine)
        with engine.connect() as conn:
            model = matching.model_named(conn, version)
        plan = remodel(engine, settings, model, run_id, apply)
    except KeyError:
        print(f"leadflow: rebuild --model: no model version {version!r}", file=sys.stderr)
        return EXIT_CONFIG
    except QualityGateError as exc:
        print(f"leadflow: rebuild --model: nothing changed: {exc}", file=sys.stderr)
        return 1
    finally:
        engine.dispose()
    print(f"Resolving {plan.contacts} contacts again with model {plan.model_version}:")
    print(f"  leads: {plan.leads_before} now, {plan.leads_after} under the model")
    print(f"  {plan.merged} leads would merge leads that are apart now")
    print(f"  {plan.split} leads now would be split")
    print(f"  {plan.moved} contacts would move to another lead")
    if apply:
        print(f"Applied in one transaction (run {run_id}); model {plan.model_version} is active.")
    else:
        print("Nothing written: run again with --apply to resolve every lead with this model.")
    return 0
