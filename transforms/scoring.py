"""Pair scores from a trained Fellegi–Sunter model (Splink 5 on an in-process DuckDB): the model's
comparisons, its training, and the scoring of given pairs. Arrow tables in, Arrow tables out.

Splink scores and trains; leadflow chooses the pairs (`transforms.match` blocking: common keys
left out, identifier blocks as stars) and clusters them under its constraints
(`transforms.resolve`). Term frequencies come in as `tf_<column>` values computed from the
warehouse's counts, so a rare surname is strong evidence and a common one is not.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from typing import Any

import duckdb
import pyarrow as pa

# Columns whose exact agreement is weighed by how common the value is.
TF_COLUMNS = ("first", "last", "company", "postcode")
# How many contacts' worth of the model's average frequency a warehouse's own counts are
# blended with: a value seen in a handful of contacts is not yet known to be rare.
TF_PSEUDO_COUNT = 1000.0
DEFAULT_MODEL = "match_model.json"


def _jw(col: str, at: float) -> str:
    return f"jaro_winkler_similarity({col}_l, {col}_r) >= {at}"


def _digits(col: str) -> str:
    return f"regexp_replace({col}, '[^0-9]', '', 'g')"


def comparisons() -> list[Any]:
    """The model's comparisons: what is compared, at which levels (Splink comparison creators)."""
    import splink.comparison_level_library as cll
    import splink.comparison_library as cl

    def level(sql: str, label: str) -> Any:
        return cll.CustomLevel(sql, label)

    def exact(col: str, tf: bool = False) -> Any:
        if tf:
            return cll.ExactMatchLevel(col).configure(
                tf_adjustment_column=col, label_for_charts="exact"
            )
        return cll.ExactMatchLevel(col).configure(label_for_charts="exact")

    null = cll.NullLevel
    other = cll.ElseLevel

    first = cl.CustomComparison(
        output_column_name="first",
        comparison_description="first name",
        comparison_levels=[
            null("first"),
            exact("first", tf=True),
            level("jaro_winkler_similarity(first_l, last_r) >= 0.9", "swapped with the surname"),
            level(_jw("first", 0.9), "jaro_winkler >= 0.9"),
            level(
                "left(first_l, 1) = left(first_r, 1) and (length(first_l) = 1 or length(first_r) = 1)",
                "initial",
            ),
            level(_jw("first", 0.7), "jaro_winkler >= 0.7"),
            other(),
        ],
    )
    last = cl.CustomComparison(
        output_column_name="last",
        comparison_description="surname",
        comparison_levels=[
            null("last"),
            exact("last", tf=True),
            level("jaro_winkler_similarity(last_l, first_r) >= 0.9", "swapped with the first name"),
            level(_jw("last", 0.9), "jaro_winkler >= 0.9"),
            level(_jw("last", 0.75), "jaro_winkler >= 0.75"),
            other(),
        ],
    )
    email = cl.CustomComparison(
        output_column_name="email",
        comparison_description="email",
        comparison_levels=[
            null("email_key"),
            exact("email_key"),
            # a typo in a mailbox name, but not another number: elif.smith.2406@ and
            # elif.smith.32406@ at one company are two people who share a name
            level(
                f"{_jw('email_local', 0.88)} and {_digits('email_local_l')} = {_digits('email_local_r')}",
                "local part jaro_winkler >= 0.88, same digits",
            ),
            level("email_domain_l = email_domain_r", "same company domain"),
            other(),
        ],
    )
    phone = cl.CustomComparison(
        output_column_name="phone",
        comparison_description="phone",
        comparison_levels=[
            null("phone"),
            exact("phone"),
            level("phone_nsn_l = phone_nsn_r", "same national number"),
            other(),
        ],
    )
    company = cl.CustomComparison(
        output_column_name="company",
        comparison_description="company",
        comparison_levels=[
            null("company"),
            exact("company", tf=True),
            level(_jw("company", 0.92), "jaro_winkler >= 0.92"),
            other(),
        ],
    )
    # Street, postcode and city in one comparison: neighbours share a postcode and a city, so
    # weighing them apart would count the same place two or three times.
    place = "(postcode_l = postcode_r or city_l = city_r)"
    address = cl.CustomComparison(
        output_column_name="address",
        comparison_description="street, postcode and city",
        comparison_levels=[
            cll.CustomLevel(
                "(street_name_l is null or street_name_r is null)"
                " and (postcode_l is null or postcode_r is null)"
                " and (city_l is null or city_r is null)"
            ).configure(is_null_level=True),
            level(
                "street_name_l = street_name_r and house_l = house_r and postcode_l = postcode_r",
                "same street, number and postcode",
            ),
            level(
                f"{_jw('street_name', 0.88)} and house_l = house_r"
                f" and ({place[1:-1]} or levenshtein(postcode_l, postcode_r) <= 1)",
                "close street, same number and place",
            ),
            level(
                "street_name_l = street_name_r and house_l = house_r",
                "same street and number elsewhere",
            ),
            level(
                f"{_jw('street_name', 0.88)} and (house_l is null or house_r is null) and {place}",
                "same street without a number, same place",
            ),
            cll.ExactMatchLevel("postcode").configure(
                tf_adjustment_column="postcode", label_for_charts="same postcode, other street"
            ),
            level(
                f"levenshtein(postcode_l, postcode_r) <= 1 or city_l = city_r or {_jw('city', 0.9)}",
                "close postcode or same city",
            ),
            other(),
        ],
    )
    birth = cl.CustomComparison(
        output_column_name="birth",
        comparison_description="date of birth",
        comparison_levels=[
            null("birth"),
            exact("birth"),
            level(
                "levenshtein(birth_l, birth_r) <= 1 or (left(birth_l, 4) = left(birth_r, 4)"
                " and substr(birth_l, 6, 2) = substr(birth_r, 9, 2)"
                " and substr(birth_l, 9, 2) = substr(birth_r, 6, 2))",
                "one digit off, or day and month swapped",
            ),
            level("left(birth_l, 4) = left(birth_r, 4)", "same year"),
            other(),
        ],
    )
    country = cl.CustomComparison(
        output_column_name="country",
        comparison_description="country",
        comparison_levels=[null("country"), exact("country"), other()],
    )
    return [first, last, email, phone, company, address, birth, country]


def settings_dict() -> dict[str, Any]:
    """A fresh, untrained model: Splink's settings for leadflow's matching columns."""
    from splink import SettingsCreator

    creator = SettingsCreator(
        link_type="dedupe_only",
        unique_id_column_name="contact_id",
        comparisons=comparisons(),
        retain_matching_columns=False,
        retain_intermediate_calculation_columns=True,
        additional_columns_to_retain=[],
    )
    return creator.create_settings_dict(sql_dialect_str="duckdb")


@dataclass(frozen=True, slots=True)
class Model:
    """A trained model: its version and Splink's JSON for it."""

    version: str
    spec: Mapping[str, Any] = field(repr=False)

    @property
    def prior_log2(self) -> float:
        lam = float(self.spec["probability_two_random_records_match"])
        return math.log2(lam / (1 - lam))

    def labels(self) -> dict[str, dict[int, str]]:
        """Per comparison, the label of each comparison vector value."""
        out: dict[str, dict[int, str]] = {}
        for comp in self.spec["comparisons"]:
            levels = [lv for lv in comp["comparison_levels"] if not lv.get("is_null_level")]
            n = len(levels)
            out[comp["output_column_name"]] = {
                n - 1 - i: str(lv.get("label_for_charts") or lv["sql_condition"])
                for i, lv in enumerate(levels)
            }
        return out

    def exact_u(self) -> dict[str, float]:
        """The average u of each term-frequency column's exact level: a frequency to shrink to."""
        out: dict[str, float] = {}
        for comp in self.spec["comparisons"]:
            for lv in comp["comparison_levels"]:
                col = lv.get("tf_adjustment_column")
                if col and col not in out and lv.get("u_probability"):
                    out[col] = float(lv["u_probability"])
        return out


@cache
def default_model() -> Model:
    """The model shipped with leadflow (trained on generated contacts and person registers), so
    a fresh warehouse resolves well before anyone trains one on its own data."""
    text = resources.files("transforms").joinpath(DEFAULT_MODEL).read_text(encoding="utf-8")
    shipped = json.loads(text)
    return Model(str(shipped["version"]), shipped["model"])


@dataclass(frozen=True, slots=True)
class Engine:
    """The in-process DuckDB the model runs on, and its limits (spilled to `temp_directory`)."""

    memory_limit: str = "1GB"
    threads: int = 2
    temp_directory: str | None = None

    def connect(self) -> duckdb.DuckDBPyConnection:
        con = duckdb.connect()
        con.execute(f"SET memory_limit = '{_safe(self.memory_limit)}'")
        con.execute(f"SET threads = {int(self.threads)}")
        if self.temp_directory:
            con.execute(f"SET temp_directory = '{_safe(self.temp_directory)}'")
        con.execute("SET preserve_insertion_order = false")
        return con


def _safe(text: str) -> str:
    if "'" in text or "\\" in text:
        raise ValueError(f"not a DuckDB setting value: {text!r}")
    return text


def term_frequencies(
    records: pa.Table,
    counts: Mapping[str, Mapping[str, int]],
    totals: Mapping[str, int],
    model: Model,
) -> dict[str, pa.Table]:
    """Per term-frequency column, a lookup of how common each of its values in `records` is
    among the warehouse's contacts (`counts` / `totals`), shrunk towards the model's average for
    a warehouse that has seen few values yet: (value, tf_<column>), what Splink's
    `register_term_frequency_lookup` takes."""
    prior = model.exact_u()
    out = {}
    for col in TF_COLUMNS:
        u = prior.get(col, 0.01)
        seen, total = counts.get(col, {}), totals.get(col, 0)
        values = sorted({v for v in records.column(col).to_pylist() if v is not None})
        tf = [(seen.get(v, 0) + TF_PSEUDO_COUNT * u) / (total + TF_PSEUDO_COUNT) for v in values]
        out[col] = pa.table(
            {col: pa.array(values, pa.string()), f"tf_{col}": pa.array(tf, pa.float64())}
        )
    return out


def quiet() -> None:
    """Splink reports each step on its logger (timings, cached tables): leadflow's runs say what
    happened themselves, so only Splink's warnings and errors go through, to the application's
    own handlers (Linkers are made with log_level=None: no handler of Splink's)."""
    import logging

    logging.getLogger("splink").setLevel(logging.WARNING)


def score_pairs(
    model: Model,
    records: pa.Table,
    pairs: pa.Table,
    tf: Mapping[str, pa.Table],
    engine: Engine | None = None,
) -> pa.Table:
    """Score `pairs` (columns `contact_id_l`, `contact_id_r`, `rule`) of `records` (contact_id
    and the matching columns) with the term-frequency lookups `tf` (`term_frequencies`): match
    weight and probability, and per comparison the level hit (`gamma_<name>`, -1 when either
    side is missing) and its weight (`w_<name>`: log2 Bayes factor, term-frequency adjustment
    included). The model's settings were validated when it was made: not again per chunk."""
    from splink import DuckDBAPI, Linker

    quiet()
    if pairs.num_rows == 0:
        return _empty_scores(model)
    con = (engine or Engine()).connect()
    try:
        api = DuckDBAPI(connection=con)
        spec = dict(model.spec)
        spec["retain_intermediate_calculation_columns"] = True
        spec["retain_matching_columns"] = False
        linker = Linker(
            api.register(records, table_name="__lf_records"),
            spec,
            log_level=None,
            validate_settings=False,
        )
        for col, lookup in tf.items():
            linker.table_management.register_term_frequency_lookup(
                api.register(lookup, table_name=f"__lf_tf_{col}"), col
            )
        blocked = pa.table(
            {
                "match_key": pairs.column("rule"),
                "join_key_l": pairs.column("contact_id_l"),
                "join_key_r": pairs.column("contact_id_r"),
            }
        )
        linker.table_management.register_blocked_pairs_for_predict(
            api.register(blocked, table_name="__lf_pairs")
        )
        scored = linker.inference.predict(warning_mode="never")
        cols = ["contact_id_l", "contact_id_r", "match_weight", "match_probability"]
        for comp in model.spec["comparisons"]:
            cols += _level_sql(comp)
        return con.sql(f"select {', '.join(cols)} from {scored.physical_name}").to_arrow_table()  # noqa: S608
    finally:
        con.close()


def _level_weights(comp: Mapping[str, Any]) -> list[tuple[int, float]]:
    """(comparison vector value, log2 m/u) of each level a comparison can hit."""
    levels = [lv for lv in comp["comparison_levels"] if not lv.get("is_null_level")]
    out = []
    for i, lv in enumerate(levels):
        m, u = lv.get("m_probability"), lv.get("u_probability")
        if m and u:
            out.append((len(levels) - 1 - i, math.log2(m / u)))
    return out


def _level_sql(comp: Mapping[str, Any]) -> list[str]:
    """The level a pair hit and its weight, from Splink's per-comparison weight columns: Splink 5
    returns a comparison's weight (`mw_<name>`, plus `mw_tf_adj_<name>` where term frequencies
    adjust it), which is the weight of exactly one level; 0 is the null level (not compared)."""
    name = comp["output_column_name"]
    mw = f"mw_{name}"
    tf = any(lv.get("tf_adjustment_column") for lv in comp["comparison_levels"])
    cases = " ".join(
        f"when abs({mw} - ({w!r})) < 1e-6 then {gamma}" for gamma, w in _level_weights(comp)
    )
    gamma = f"case when {mw} = 0 then -1 {cases} else null end as gamma_{name}"
    weight = f"{mw} + coalesce(mw_tf_adj_{name}, 0)" if tf else mw
    return [gamma, f"{weight} as w_{name}"]


def _empty_scores(model: Model) -> pa.Table:
    names = [c["output_column_name"] for c in model.spec["comparisons"]]
    fields = [
        pa.field("contact_id_l", pa.string()),
        pa.field("contact_id_r", pa.string()),
        pa.field("match_weight", pa.float64()),
        pa.field("match_probability", pa.float64()),
    ]
    fields += [pa.field(f"gamma_{n}", pa.int32()) for n in names]
    fields += [pa.field(f"w_{n}", pa.float64()) for n in names]
    return pa.schema(fields).empty_table()


def evidence(
    model: Model, row: Mapping[str, Any], labels: Mapping[str, Mapping[int, str]]
) -> dict[str, Any]:
    """Why a pair scored what it did: per comparison the level hit and its weight (log2 Bayes
    factor), and the total; what `lead_links.evidence` and `match_review.evidence` keep."""
    comps = []
    for name, by_gamma in labels.items():
        gamma = row.get(f"gamma_{name}")
        if gamma is None or gamma < 0:
            continue  # missing on either side: not compared
        weight = row.get(f"w_{name}")
        comps.append(
            {
                "name": name,
                "level": by_gamma.get(int(gamma), str(gamma)),
                "log2_bayes_factor": None if weight is None else round(float(weight), 2),
            }
        )
    return {
        "model_version": model.version,
        "match_weight": round(float(row["match_weight"]), 2),
        "match_probability": round(float(row["match_probability"]), 6),
        "comparisons": comps,
    }


@dataclass(frozen=True, slots=True)
class TrainingStats:
    contacts: int
    sample: int
    em_rules: tuple[str, ...]
    probability_two_random_records_match: float

    def as_dict(self) -> dict[str, Any]:
        return {
            "contacts": self.contacts,
            "sample": self.sample,
            "em_rules": list(self.em_rules),
            "probability_two_random_records_match": self.probability_two_random_records_match,
        }


# Rules that are (nearly) always the same person: λ, the prior of a match, is estimated from
# how many pairs they find (Splink's deterministic estimate, with the recall they are given).
DETERMINISTIC_RULES = (
    "l.email_key = r.email_key",
    "l.phone = r.phone and l.last = r.last",
    "l.first = r.first and l.last = r.last and l.birth = r.birth",
    "l.first = r.first and l.last = r.last and l.street_name = r.street_name"
    " and l.house = r.house and l.postcode = r.postcode",
)
DETERMINISTIC_RECALL = 0.7
# Expectation maximisation needs blocks where matches are common; each leaves its own columns
# untrained, so their union trains every comparison.
EM_RULES: tuple[tuple[str, ...], ...] = (
    ("first", "last"),
    ("postcode", "birth"),
    ("email_key",),
    ("phone",),
)


def train(
    records: pa.Table,
    start: Model | None = None,
    *,
    max_pairs: float = 5e6,
    seed: int = 42,
    engine: Engine | None = None,
    min_em_pairs: int = 1000,
    max_em_pairs: int = 20_000_000,
) -> tuple[dict[str, Any], TrainingStats]:
    """Train a model on `records` (contact_id and the matching columns, no tf columns): λ from
    the deterministic rules, u by random sampling, m by expectation maximisation over every EM
    rule that finds between `min_em_pairs` and `max_em_pairs` pairs (a rule on common names
    alone can find hundreds of millions). Starts from `start` (its parameters stay for a
    comparison these records cannot train), else from untrained settings."""
    from splink import DuckDBAPI, Linker, block_on

    quiet()
    con = (engine or Engine()).connect()
    try:
        api = DuckDBAPI(connection=con)
        spec = dict(start.spec) if start else settings_dict()
        spec["blocking_rules_to_generate_predictions"] = []
        table = api.register(records, table_name="__lf_training")
        linker = Linker(table, spec, log_level=None)
        linker.training.estimate_probability_two_random_records_match(
            list(DETERMINISTIC_RULES), recall=DETERMINISTIC_RECALL
        )
        linker.training.estimate_u_using_random_sampling(max_pairs=max_pairs, seed=seed)
        used = []
        con.register("__lf_em", records)
        for cols in EM_RULES:
            agree = " and ".join(f"{c} is not null" for c in cols)
            pairs = con.sql(
                f"select coalesce(sum(n * (n - 1) / 2), 0) from (select count(*) as n "  # noqa: S608
                f"from __lf_em where {agree} group by {', '.join(cols)})"
            ).fetchall()[0][0]
            if not min_em_pairs <= pairs <= max_em_pairs:
                continue
            linker.training.estimate_parameters_using_expectation_maximisation(block_on(*cols))
            used.append("+".join(cols))
        trained = linker.misc.save_model_to_json()
        lam = float(trained["probability_two_random_records_match"])
        return trained, TrainingStats(records.num_rows, records.num_rows, tuple(used), lam)
    finally:
        con.close()


def describe(model: Model) -> list[dict[str, Any]]:
    """Each comparison's levels with m, u and the match weight log2(m/u): `leadflow model show`."""
    out = []
    for comp in model.spec["comparisons"]:
        for lv in comp["comparison_levels"]:
            if lv.get("is_null_level"):
                continue
            m, u = lv.get("m_probability"), lv.get("u_probability")
            weight = math.log2(m / u) if m and u else None
            out.append(
                {
                    "comparison": comp["output_column_name"],
                    "level": lv.get("label_for_charts") or lv["sql_condition"],
                    "m": m,
                    "u": u,
                    "match_weight": weight,
                    "tf_adjusted": bool(lv.get("tf_adjustment_column")),
                }
            )
    return out
