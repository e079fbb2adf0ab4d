"""Entity resolution quality and speed: leadflow's resolver and Splink's own dedupe on the same
labelled rows, in the same run, with the ratios between them.

    PYTHONPATH=. .venv/bin/python benchmarks/resolution_bench.py --data register --rows 200000
    PYTHONPATH=. .venv/bin/python benchmarks/resolution_bench.py --data crm --rows 1000000 --incremental 10000

Data sets, seeded:
- `crm`: the contacts `benchmarks/pipeline.py` lands (names, email, phone, company; 30% are
  re-sightings with the email or the name upper-cased or the phone written nationally);
- `register`: person-register rows (`benchmarks/person_register.py`): names, a postal address
  and a birth date, no email or phone, with typing errors, nicknames, swapped names and parts
  left out;
- `mixed`: the richer generated CRM contacts of `benchmarks/resolution_data.py` (names,
  mailboxes, phones, companies, addresses, birth dates; paper rows with a name and an address).

Each system runs in a process of its own (peak RSS is its own, the input loaded once from a
file, not generated there): leadflow resolves every row at once with the shipped model
(`link_contacts` + golden records: the pipeline's resolve stage); Splink trains its usual model
(names, dates, postcodes, emails with Splink's comparison library, λ from deterministic rules,
u by random sampling, m by EM over two blocking rules) and predicts and clusters at 0.9. With
`--incremental K`, the last K rows are then resolved against the others' leads, as a run with K
new contacts does. One JSON line: per system pairwise precision/recall/F1 over the clusters,
cluster precision/recall, seconds, peak RSS, and leadflow's blocking recall and ratios to Splink.
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import random
import resource
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "benchmarks")]

from transforms.match import match_table  # noqa: E402
from transforms.normalize import NormalizeOptions, normalize_batch  # noqa: E402
from transforms.records import Contact, RawRow  # noqa: E402


def _pairs(sizes: Sequence[int]) -> int:
    return sum(s * (s - 1) // 2 for s in sizes)


def scores(predicted: Sequence[str], truth: Sequence[int]) -> dict[str, Any]:
    """Pairwise precision/recall/F1 of the clusters against the truth (every pair inside a
    predicted cluster is a predicted match), and cluster precision/recall (clusters exactly
    right, over predicted and true clusters)."""
    both = Counter(zip(predicted, truth, strict=True))
    pred_sizes, true_sizes = Counter(predicted), Counter(truth)
    tp = _pairs(list(both.values()))
    pp, tt = _pairs(list(pred_sizes.values())), _pairs(list(true_sizes.values()))
    precision = tp / pp if pp else 1.0
    recall = tp / tt if tt else 1.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    exact = sum(1 for (p, t), k in both.items() if pred_sizes[p] == k == true_sizes[t])
    return {
        "pairwise_precision": round(precision, 5),
        "pairwise_recall": round(recall, 5),
        "pairwise_f1": round(f1, 5),
        "true_pairs": tt,
        "cluster_precision": round(exact / len(pred_sizes), 5),
        "cluster_recall": round(exact / len(true_sizes), 5),
    }


# ---- data -------------------------------------------------------------------------------------


def _normalize(
    rows: list[tuple[int, dict[str, Any]]], region: str
) -> tuple[list[Contact], list[int], int]:
    at = datetime(2026, 1, 1, tzinfo=UTC)
    raws = [
        RawRow(f"raw_{i:09d}", "bench", "spreadsheet", str(i), at + timedelta(seconds=i), payload)
        for i, (_, payload) in enumerate(rows)
    ]
    opts = NormalizeOptions(default_region=region, internal_domains=frozenset(), columns={})
    contacts, rejects = normalize_batch(raws, opts)
    label = {f"con_{i:09d}": entity for i, (entity, _) in enumerate(rows)}
    return contacts, [label[c.contact_id] for c in contacts], len(rejects)


def crm_rows(n: int, seed: int) -> list[tuple[int, dict[str, Any]]]:
    """The rows benchmarks/pipeline.py lands for the same n and seed, with who each one is."""
    from pipeline import _person, _variant

    rnd = random.Random(seed)
    uniques = int(n * 0.7)
    people = [_person(rnd, i) for i in range(uniques)]
    rows: list[tuple[int, dict[str, Any]]] = list(enumerate(people))
    for _ in range(n - uniques):
        k = rnd.choice(range(uniques))
        rows.append((k, _variant(rnd, people[k])))
    rnd.shuffle(rows)
    header = {"first": "Vorname", "last": "Nachname", "email": "E-Mail", "phone": "Telefon"}
    header |= {"company": "Firma"}
    return [(k, {h: p[f] for f, h in header.items()}) for k, p in rows]


def register_rows(n: int, seed: int) -> list[tuple[int, dict[str, Any]]]:
    from person_register import iter_register

    return list(iter_register(n, seed))


def mixed_contacts(n: int, seed: int) -> tuple[list[Contact], list[int], int]:
    from resolution_data import generate

    contacts, labels = generate(n, seed=seed)
    return contacts, labels, 0


def load_data(kind: str, n: int, seed: int) -> tuple[list[Contact], list[int], int]:
    if kind == "crm":
        return _normalize(crm_rows(n, seed), "TR")
    if kind == "register":
        return _normalize(register_rows(n, seed), "DE")
    return mixed_contacts(n, seed)


# ---- the systems, each in a process of its own ---------------------------------------------------


def _peak_mb() -> float:
    """This process's peak resident memory since it started (VmHWM: getrusage's ru_maxrss would
    carry the high-water mark of the parent it was forked from)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return round(int(line.split()[1]) / 1024, 1)
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def run_leadflow(folder: Path, n_full: int) -> dict[str, Any]:
    from transforms.resolve import Context, context_of, golden_leads, link_contacts

    with open(folder / "contacts.pkl", "rb") as fh:
        contacts: list[Contact] = pickle.load(fh)
    table = pq.read_table(folder / "features.parquet")
    full, later = contacts[:n_full], contacts[n_full:]
    rss_loaded = _peak_mb()
    t0 = time.perf_counter()
    linking = link_contacts(full, Context(), new_table=table.slice(0, n_full))
    by_id = {c.contact_id: c for c in full}
    leads = golden_leads(linking, by_id)
    resolve_s = time.perf_counter() - t0
    lead_of = {lk.contact_id: lk.lead_id for lk in linking.links}
    out: dict[str, Any] = {
        "resolve_s": round(resolve_s, 2),
        "peak_rss_mb": _peak_mb(),
        "rss_after_loading_mb": rss_loaded,
        "scored_pairs": linking.scored_pairs,
        "leads": len(leads),
        "review_pairs": len(linking.reviews),
    }
    if later:
        t0 = time.perf_counter()
        # What the warehouse would hand over: the members of every lead sharing a usable
        # blocking key with the new contacts (`warehouse.matching.read_context`), in memory.
        existing = [(c, lead_of[c.contact_id]) for c in full]
        candidates = _candidate_leads(table, n_full, {c.contact_id: lead for c, lead in existing})
        members = [(c, lead) for c, lead in existing if lead in candidates]
        context = Context(members=context_of(members))
        context_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        step = link_contacts(later, context, new_table=table.slice(n_full))
        everyone = {c.contact_id: c for c, _ in members} | {c.contact_id: c for c in later}
        golden_leads(step, everyone)
        out["incremental"] = {
            "new": len(later),
            "existing": len(full),
            "context_contacts": len(members),
            "context_s": round(context_s, 2),
            "resolve_s": round(time.perf_counter() - t0, 2),
        }
        lead_of.update({lk.contact_id: lk.lead_id for lk in step.links})
    (folder / "leadflow_leads.json").write_text(json.dumps(lead_of))
    return out


def _candidate_leads(table: pa.Table, n_full: int, lead_of: dict[str, str]) -> set[str]:
    """The leads `warehouse.matching.read_context` would read for the new contacts: those of
    every contact sharing a key with them that is not too common (exact keys always count)."""
    import duckdb

    from transforms.match import EXACT_RULES, MatchSettings, block_key_rows, rule_of

    con = duckdb.connect()
    keys = block_key_rows(table, con).to_pylist()
    con.close()
    new = set(table.column("contact_id").to_pylist()[n_full:])
    size = Counter(k["block_key"] for k in keys)
    limit = MatchSettings().max_block_size
    wanted = {
        k["block_key"]
        for k in keys
        if k["contact_id"] in new
        and (size[k["block_key"]] <= limit or rule_of(k["block_key"]) in EXACT_RULES)
    }
    return {
        lead_of[k["contact_id"]]
        for k in keys
        if k["block_key"] in wanted and k["contact_id"] in lead_of
    }


def run_splink(folder: Path, n_full: int) -> dict[str, Any]:
    """Splink's usual dedupe of the same rows: its comparison library on the same columns."""
    import duckdb
    import splink.comparison_library as cl
    from splink import DuckDBAPI, Linker, SettingsCreator, block_on

    table = pq.read_table(folder / "features.parquet").slice(0, n_full)
    con = duckdb.connect()
    t0 = time.perf_counter()
    settings = SettingsCreator(
        link_type="dedupe_only",
        unique_id_column_name="contact_id",
        comparisons=[
            cl.NameComparison("first").configure(term_frequency_adjustments=True),
            cl.NameComparison("last").configure(term_frequency_adjustments=True),
            cl.EmailComparison("email_key"),
            cl.ExactMatch("phone"),
            cl.JaroWinklerAtThresholds("company"),
            cl.JaroWinklerAtThresholds("street_name"),
            cl.ExactMatch("house"),
            cl.PostcodeComparison("postcode"),
            cl.NameComparison("city"),
            cl.LevenshteinAtThresholds("birth", [1, 2]),
        ],
        # each rule holds an identifier, a birth date or a postcode: selective on any of the data
        # sets (a rule on names and a company alone makes blocks of hundreds of thousands of
        # pairs on the CRM contacts, whose names and companies come from short lists)
        blocking_rules_to_generate_predictions=[
            block_on("email_key"),
            block_on("phone"),
            block_on("first", "last", "postcode"),
            block_on("last", "birth"),
            block_on("first", "birth"),
            block_on("street_name", "house", "postcode"),
            block_on("postcode", "birth"),
        ],
    )
    api = DuckDBAPI(connection=con)
    linker = Linker(api.register(table), settings, log_level=None)
    linker.training.estimate_probability_two_random_records_match(
        [block_on("email_key"), block_on("first", "last", "birth")], recall=0.7
    )
    linker.training.estimate_u_using_random_sampling(max_pairs=5e6, seed=1)
    # EM over two rules that each find between a thousand and twenty million pairs here (on the
    # CRM contacts, first + last name alone finds hundreds of millions)
    con.register("__bench", table)
    em: list[tuple[str, ...]] = []
    for cols in (("first", "last"), ("postcode", "birth"), ("email_key",), ("phone",)):
        agree = " and ".join(f"{c} is not null" for c in cols)
        pairs = con.sql(
            f"select coalesce(sum(n * (n - 1) / 2), 0) from (select count(*) as n from __bench "  # noqa: S608
            f"where {agree} group by {', '.join(cols)})"
        ).fetchall()[0][0]
        if 1000 <= pairs <= 20_000_000 and len(em) < 2:
            em.append(cols)
            linker.training.estimate_parameters_using_expectation_maximisation(block_on(*cols))
    train_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    pred = linker.inference.predict(threshold_match_probability=0.5)
    clusters = linker.clustering.cluster_pairwise_predictions_at_threshold(pred, 0.9)
    rows = con.sql(f"select contact_id, cluster_id from {clusters.physical_name}").fetchall()  # noqa: S608
    dedupe_s = time.perf_counter() - t0
    (folder / "splink_leads.json").write_text(json.dumps({c: str(k) for c, k in rows}))
    return {"train_s": round(train_s, 2), "dedupe_s": round(dedupe_s, 2), "peak_rss_mb": _peak_mb()}


def _child(what: str, folder: Path, n_full: int) -> dict[str, Any]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run(
        [sys.executable, __file__, "--child", what, "--folder", str(folder), "--rows", str(n_full)],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if out.returncode:
        raise RuntimeError(f"{what} failed:\n{out.stderr[-4000:]}")
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def blocking_recall(table: pa.Table, labels: Sequence[int]) -> float:
    """The share of true pairs that leadflow's blocking offers for scoring."""
    import duckdb

    from transforms.match import MatchSettings, candidate_pairs

    entity = dict(zip(table.column("contact_id").to_pylist(), labels, strict=True))
    records = table.append_column("is_new", pa.array([True] * table.num_rows))
    records = records.append_column("ord", pa.array(range(table.num_rows), pa.int64()))
    con = duckdb.connect()
    pairs = candidate_pairs(records, (), MatchSettings().max_block_size, con)
    con.close()
    found = sum(
        entity[a] == entity[b]
        for a, b in zip(
            pairs.column("contact_id_l").to_pylist(),
            pairs.column("contact_id_r").to_pylist(),
            strict=True,
        )
    )
    truth = _pairs(list(Counter(labels).values()))
    return round(found / truth, 5) if truth else 1.0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", choices=["crm", "register", "mixed"], default="register")
    ap.add_argument("--rows", type=int, default=200_000)
    ap.add_argument("--incremental", type=int, default=0)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--child", choices=["leadflow", "splink"], help=argparse.SUPPRESS)
    ap.add_argument("--folder", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        run = run_leadflow if args.child == "leadflow" else run_splink
        print(json.dumps(run(args.folder, args.rows)))
        return

    t0 = time.perf_counter()
    contacts, labels, rejected = load_data(args.data, args.rows + args.incremental, args.seed)
    n_full = len(contacts) - args.incremental
    table = match_table(contacts)
    data_s = time.perf_counter() - t0
    with tempfile.TemporaryDirectory(prefix="resolution-bench-") as tmp:
        folder = Path(tmp)
        with open(folder / "contacts.pkl", "wb") as fh:
            pickle.dump(contacts, fh, protocol=pickle.HIGHEST_PROTOCOL)
        pq.write_table(table, folder / "features.parquet")
        leadflow = _child("leadflow", folder, n_full)
        splink = _child("splink", folder, n_full)
        ours = json.loads((folder / "leadflow_leads.json").read_text())
        theirs = json.loads((folder / "splink_leads.json").read_text())
    ids = [c.contact_id for c in contacts]
    leadflow.update(scores([ours[i] for i in ids[:n_full]], labels[:n_full]))
    if args.incremental:
        leadflow["incremental"].update(
            {f"after_{k}": v for k, v in scores([ours[i] for i in ids], labels).items()}
        )
    splink.update(scores([theirs[i] for i in ids[:n_full]], labels[:n_full]))
    result = {
        "data": args.data,
        "rows": n_full,
        "seed": args.seed,
        "rejected_at_normalize": rejected,
        "data_and_features_s": round(data_s, 1),
        "blocking_recall": blocking_recall(table.slice(0, n_full), labels[:n_full]),
        "leadflow": leadflow,
        "splink": splink,
        "resolve_over_splink_dedupe": round(leadflow["resolve_s"] / splink["dedupe_s"], 2),
        "rss_over_splink": round(leadflow["peak_rss_mb"] / splink["peak_rss_mb"], 2),
        "load_avg_1m": round(os.getloadavg()[0], 2),
        "cpus": os.cpu_count(),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
