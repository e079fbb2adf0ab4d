"""Prints entity-resolution quality (pairwise and cluster scores), speed and peak memory as JSON.

python benchmarks/resolution_bench.py quality --n 50000
python benchmarks/resolution_bench.py speed --n 1000000
python benchmarks/resolution_bench.py incremental --n 1000000 --new 10000
"""

from __future__ import annotations

import argparse
import gc
import json
import resource
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from resolution_data import generate  # noqa: E402

from transforms.match import block_keys, compare, features  # noqa: E402
from transforms.records import Contact  # noqa: E402
from transforms.resolve import Resolution, resolve_contacts  # noqa: E402


def _pairs(sizes: Sequence[int]) -> int:
    return sum(s * (s - 1) // 2 for s in sizes)


def scores(predicted: Sequence[str], truth: Sequence[int]) -> dict[str, float]:
    """Pairwise precision/recall/F1 from the contingency of predicted and true clusters,
    and cluster-level exact-match precision/recall."""
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
        "predicted_pairs": pp,
        "cluster_precision": round(exact / len(pred_sizes), 5),
        "cluster_recall": round(exact / len(true_sizes), 5),
        "true_clusters": len(true_sizes),
        "predicted_clusters": len(pred_sizes),
    }


SHARED = {
    "email_same",
    "local_same",
    "phone_same",
    "postal_same",
    "street_same",
    "street_close",
    "company_same",
    "company_close",
    "birth_same",
}


def name_only_pairs(contacts: Sequence[Contact], truth: Sequence[int]) -> int:
    """True duplicate pairs that share nothing but (a spelling of) the name: no resolver that
    refuses to link on a name alone can find them, so they bound the reachable recall."""
    by_entity: dict[int, list[Contact]] = defaultdict(list)
    for c, t in zip(contacts, truth, strict=True):
        by_entity[t].append(c)
    n = 0
    for members in by_entity.values():
        feats = [features(c) for c in members]
        for j in range(1, len(feats)):
            for i in range(j):
                _, levels, _ = compare(feats[i], feats[j])
                n += not (SHARED & set(levels.values()))
    return n


def _lead_of(res: Resolution) -> dict[str, str]:
    return {lk.contact_id: lk.lead_id for lk in res.links}


def _peak_rss_mb() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def run_quality(n: int, dup: float, seed: int) -> dict[str, object]:
    contacts, labels = generate(n, dup, seed)
    t0 = time.perf_counter()
    res = resolve_contacts(contacts, [])
    elapsed = time.perf_counter() - t0
    lead_of = _lead_of(res)
    out: dict[str, object] = {"mode": "quality", "n": n, "dup_rate": dup, "seed": seed}
    out.update(scores([lead_of[c.contact_id] for c in contacts], labels))
    name_only = name_only_pairs(contacts, labels)
    tt = int(out["true_pairs"])  # type: ignore[call-overload]
    out.update(
        name_only_true_pairs=name_only,
        recall_ceiling_without_name_only_links=round((tt - name_only) / tt, 5),
        resolve_s=round(elapsed, 2),
        review_pairs=len(res.reviews),
        rules=dict(Counter(lk.rule for lk in res.links)),
    )
    return out


def run_speed(n: int, dup: float, seed: int) -> dict[str, object]:
    contacts, labels = generate(n, dup, seed)
    gc.collect()
    gc.freeze()  # the input is long-lived: keep the collector from re-walking it
    rss_in = _peak_rss_mb()
    t0 = time.perf_counter()
    res = resolve_contacts(contacts, [])
    elapsed = time.perf_counter() - t0
    lead_of = _lead_of(res)
    out: dict[str, object] = {"mode": "speed", "n": n, "dup_rate": dup, "seed": seed}
    out.update(resolve_s=round(elapsed, 2), peak_rss_mb=_peak_rss_mb(), rss_after_input_mb=rss_in)
    out.update(scores([lead_of[c.contact_id] for c in contacts], labels))
    return out


def run_incremental(n: int, new: int, dup: float, seed: int) -> dict[str, object]:
    """Resolve `n` contacts into leads, then `new` more against them: the candidate leads come
    from a block-key index (as `contact_blocks` does in the warehouse) and only they are passed."""
    contacts, labels = generate(n + new, dup, seed)
    old, fresh = contacts[:n], contacts[n:]
    base = resolve_contacts(old, [])
    lead_of = _lead_of(base)
    del base
    index: dict[str, list[int]] = defaultdict(list)
    for i, c in enumerate(old):
        for k in block_keys(features(c)):
            index[k].append(i)
    members: dict[str, list[int]] = defaultdict(list)
    for i, c in enumerate(old):
        members[lead_of[c.contact_id]].append(i)
    gc.collect()
    gc.freeze()
    t0 = time.perf_counter()
    leads = {
        lead_of[old[i].contact_id]
        for c in fresh
        for k in block_keys(features(c))
        for i in index.get(k, ())
    }
    existing = [(old[i], lid) for lid in sorted(leads) for i in members[lid]]
    t1 = time.perf_counter()
    res = resolve_contacts(fresh, existing)
    t2 = time.perf_counter()
    final = dict(lead_of)
    final.update(_lead_of(res))
    for a, b in res.merges:
        for i in members[a]:
            final[old[i].contact_id] = b
    out: dict[str, object] = {
        "mode": "incremental",
        "existing_contacts": n,
        "existing_leads": len(members),
        "new": new,
        "context_contacts": len(existing),
        "context_s": round(t1 - t0, 3),
        "resolve_s": round(t2 - t1, 3),
        "peak_rss_mb": _peak_rss_mb(),
    }
    out.update(scores([final[c.contact_id] for c in contacts], labels))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("mode", choices=["quality", "speed", "incremental"])
    ap.add_argument("--n", type=int, default=50_000)
    ap.add_argument("--new", type=int, default=10_000)
    ap.add_argument("--dup", type=float, default=0.3)
    ap.add_argument("--seed", type=int, default=42)
    a = ap.parse_args()
    if a.mode == "quality":
        out = run_quality(a.n, a.dup, a.seed)
    elif a.mode == "speed":
        out = run_speed(a.n, a.dup, a.seed)
    else:
        out = run_incremental(a.n, a.new, a.dup, a.seed)
    print(json.dumps(out, ensure_ascii=False))


if __name__ == "__main__":
    main()
