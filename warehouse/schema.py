"""The warehouse tables: one SQLAlchemy Core MetaData, the single source of truth for their shape."""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    Date,
    DateTime,
    Float,
    Index,
    Integer,
    MetaData,
    Numeric,
    String,
    Table,
    Text,
    UniqueConstraint,
)

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "pk": "pk_%(table_name)s",
    }
)

ID = String(40)
TS = DateTime(timezone=True)

raw_contacts = Table(
    "raw_contacts",
    metadata,
    Column("raw_id", ID, primary_key=True),
    Column("source", String(64), nullable=False),
    Column("source_kind", String(16), nullable=False),
    Column("source_record_id", Text, nullable=False),
    Column("received_at", TS, nullable=False),
    Column("payload", Text, nullable=False),
    Column("content_hash", String(64), nullable=False),
    Column("run_id", ID, nullable=False),
    UniqueConstraint("source", "source_record_id"),
    # each source's newest record from the index alone (the freshness check, `leadflow status`)
    Index("ix_raw_contacts_source_received_at", "source", "received_at"),
)

# Raw records landed and not yet settled (become a contact, or a reject at normalize): what the
# next processing reads, so finding the pending work costs the size of the queue, not of
# raw_contacts. Landing adds to it in its transaction; processing removes what it settled in its.
raw_pending = Table(
    "raw_pending",
    metadata,
    Column("raw_id", ID, primary_key=True),
)

contacts = Table(
    "contacts",
    metadata,
    Column("contact_id", ID, primary_key=True),
    Column("raw_id", ID, nullable=False, unique=True),
    Column("source", String(64), nullable=False),
    Column("source_kind", String(16), nullable=False),
    Column("received_at", TS, nullable=False),
    Column("first_name", Text),
    Column("last_name", Text),
    Column("full_name", Text),
    Column("name_key", Text, index=True),
    Column("email", Text),
    Column("email_key", Text, index=True),
    Column("email_is_role", Boolean, nullable=False, default=False),
    Column("email_is_free", Boolean, nullable=False, default=False),
    Column("email_is_disposable", Boolean, nullable=False, default=False),
    Column("phone", String(20), index=True),
    Column("phone_raw", Text),
    Column("company", Text),
    Column("company_key", Text, index=True),
    Column("company_domain", Text),
    Column("job_title", Text),
    Column("street", Text),
    Column("city", Text),
    Column("postal_code", String(20)),
    Column("region", Text),
    Column("country", String(2)),
    Column("birth_date", Date),
    Column("interest", Text),
    Column("message", Text),
    Column("budget_amount", Numeric(18, 2)),
    Column("budget_currency", String(3)),
    Column("timeline_months", Integer),
    Column("consent", Boolean),
    Column("issues", JSON, nullable=False),
    Column("phone_ext", String(10)),
    Column("phone_is_mobile", Boolean),
    Column("other_emails", JSON),
    Column("other_phones", JSON),
    Index("ix_contacts_received_at", "received_at"),  # the data's clock: the newest contact
)

# Blocking keys of each contact (email key, phone, phonetic name, postal code + name …): new
# contacts find their candidate leads through this index, set-based, without a full scan. A key
# is stored as its 64-bit hash (`transforms.match.block_hash`: the rule in the top byte), and
# only the hash is indexed: no primary key, since a contact's keys are written once, when it is
# published (or deleted and written again), and an index over (key, contact) would be three
# times the size and take a chunk's keys half as fast.
contact_blocks = Table(
    "contact_blocks",
    metadata,
    Column("block_hash", BigInteger, nullable=False),
    Column("contact_id", ID, nullable=False),
    Index("ix_contact_blocks_block_hash", "block_hash"),
)

# Grey-zone pairs for a person to decide; a decision (must_link / cannot_link) binds every run.
match_review = Table(
    "match_review",
    metadata,
    Column("review_id", ID, primary_key=True),
    Column("contact_a", ID, nullable=False, index=True),
    Column("contact_b", ID, nullable=False, index=True),
    Column("score", Float, nullable=False),
    Column("evidence", JSON, nullable=False),
    Column("decision", String(16), nullable=False),
    Column("decided_by", Text),
    Column("decided_at", TS),
    Column("applied", Boolean, nullable=False),
    Column("run_id", ID, nullable=False),
    # 'pair' (found by the resolver) or 'split' (a steward: this contact is not its lead's person)
    Column("kind", String(16), nullable=False, server_default="pair"),
    Column("lead_id", ID),  # a split: the lead the contact was taken out of
    Column("revoked_by", Text),
    Column("revoked_at", TS),
    Column("model_version", String(64)),  # the match model that scored the pair
    Index("ix_match_review_decision_kind", "decision", "kind"),
)

# Every decision and revocation a steward made, in order: who, what, when.
review_log = Table(
    "review_log",
    metadata,
    Column("log_id", Integer, primary_key=True, autoincrement=True),
    Column("review_id", ID, nullable=False, index=True),
    Column("action", String(16), nullable=False),  # 'decide' or 'revoke'
    Column("decision", String(16), nullable=False),
    Column("steward", Text, nullable=False),
    Column("at", TS, nullable=False),
)

leads = Table(
    "leads",
    metadata,
    Column("lead_id", ID, primary_key=True),
    Column("first_name", Text),
    Column("last_name", Text),
    Column("full_name", Text),
    Column("email", Text),
    Column("phone", String(20)),
    Column("company", Text),
    Column("company_key", Text),
    Column("company_domain", Text),
    Column("job_title", Text),
    Column("city", Text),
    Column("postal_code", String(20)),
    Column("country", String(2)),
    Column("lead_source", String(64), nullable=False),
    Column("first_seen_at", TS, nullable=False),
    Column("last_seen_at", TS, nullable=False),
    Column("contact_count", Integer, nullable=False),
    Column("source_count", Integer, nullable=False),
    Column("survivorship", JSON, nullable=False),
    Column("status", String(32), nullable=False),
    Column("score", Integer, nullable=False),
    Column("grade", String(1), nullable=False),
    Column("reasons", JSON, nullable=False),
    Column("rules_version", String(32), nullable=False),
    Column("converted_at", TS),
    Column("account_id", ID),
    Column("opportunity_id", ID, index=True),
)

lead_links = Table(
    "lead_links",
    metadata,
    Column("contact_id", ID, primary_key=True),
    Column("lead_id", ID, nullable=False, index=True),
    Column("rule", String(64), nullable=False),
    Column("score", Float, nullable=False),
    Column("evidence", JSON, nullable=False),
    Column("model_version", String(64)),  # the match model that scored the link
)

accounts = Table(
    "accounts",
    metadata,
    Column("account_id", ID, primary_key=True),
    Column("name", Text, nullable=False),
    Column("kind", String(16), nullable=False),
    Column("domain", Text),
    Column("company_key", Text),
    Column("country", String(2)),
)

opportunities = Table(
    "opportunities",
    metadata,
    Column("opportunity_id", ID, primary_key=True),
    Column("lead_id", ID, nullable=False, unique=True),
    Column("account_id", ID, nullable=False, index=True),
    Column("name", Text, nullable=False),
    Column("primary_contact_id", ID, nullable=False),
    Column("lead_source", String(64), nullable=False),
    Column("stage", String(40), nullable=False),
    Column("probability", Integer, nullable=False),
    Column("amount", Numeric(18, 2)),
    Column("currency", String(3)),
    Column("close_date", Date, nullable=False),
    Column("created_at", TS, nullable=False),
)

lead_merges = Table(
    "lead_merges",
    metadata,
    Column("merged_lead_id", ID, primary_key=True),
    Column("into_lead_id", ID, nullable=False, index=True),
    Column("run_id", ID, nullable=False),
)

rejects = Table(
    "rejects",
    metadata,
    Column("reject_id", ID, primary_key=True),
    Column("raw_id", ID, index=True),
    Column("source", String(64), nullable=False),
    Column("source_record_id", Text, nullable=False),
    Column("stage", String(16), nullable=False),
    Column("code", String(64), nullable=False),
    Column("message", Text, nullable=False),
    Column("raw", Text, nullable=False),
    Column("run_id", ID, nullable=False),
    # 'open' while quarantined; 'replayed' once a replay landed the record as a contact.
    Column("status", String(16), nullable=False, server_default="open"),
    Column("replayed_at", TS),
    Column("replay_run_id", ID),
    # 'dismissed' by a person who decided to drop it: who, why and when
    Column("dismissed_by", Text),
    Column("dismissed_why", Text),
    Column("dismissed_at", TS),
    Index("ix_rejects_status_code", "status", "code"),
)

source_cursors = Table(
    "source_cursors",
    metadata,
    Column("source", String(64), primary_key=True),
    Column("cursor", JSON, nullable=False),
    Column("run_id", ID, nullable=False),
)

pipeline_runs = Table(
    "pipeline_runs",
    metadata,
    Column("run_id", ID, primary_key=True),
    Column("flow", String(32), nullable=False),
    Column("status", String(16), nullable=False),
    Column("started_at", TS, nullable=False),
    Column("finished_at", TS),
    Column("params", JSON, nullable=False),
    Column("stats", JSON, nullable=False),
    Column("error", Text),
)

dq_results = Table(
    "dq_results",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("run_id", ID, nullable=False, index=True),
    Column("suite", String(64), nullable=False),
    Column("expectation", String(128), nullable=False),
    Column("column_name", String(64)),
    Column("severity", String(16), nullable=False),
    Column("success", Boolean, nullable=False),
    Column("unexpected_count", Integer, nullable=False),
    Column("sample_ids", JSON, nullable=False),
    Column("scope", String(16)),  # 'staged' (the run's own rows) or 'published' (the new state)
    Column("observed_value", Float),  # e.g. the row count a volume check saw
)

opportunity_stages = Table(
    "opportunity_stages",
    metadata,
    Column("stage", String(40), primary_key=True),
    Column("sort_order", Integer, nullable=False, unique=True),
    Column("probability", Integer, nullable=False),
    Column("forecast_category", String(16), nullable=False),
    Column("is_closed", Boolean, nullable=False),
    Column("is_won", Boolean, nullable=False),
)

lead_status_history = Table(
    "lead_status_history",
    metadata,
    Column("history_id", ID, primary_key=True),
    Column("lead_id", ID, nullable=False, index=True),
    Column("from_status", String(32)),
    Column("to_status", String(32), nullable=False),
    Column("changed_at", TS, nullable=False),
    Column("score", Integer, nullable=False),
    Column("reason", Text, nullable=False),
    Column("rules_version", String(32), nullable=False),
)

opportunity_stage_history = Table(
    "opportunity_stage_history",
    metadata,
    Column("history_id", ID, primary_key=True),
    Column("opportunity_id", ID, nullable=False, index=True),
    Column("lead_id", ID, nullable=False),
    Column("from_stage", String(40)),
    Column("to_stage", String(40), nullable=False),
    Column("changed_at", TS, nullable=False),
    Column("reason", Text, nullable=False),
    Column("rules_version", String(32), nullable=False),
)

# Exchange rates from a rates file: one unit of the base currency (`fx.base_currency`, EUR for
# the ECB's file) is `rate` units of `currency` on `rate_date`.
fx_rates = Table(
    "fx_rates",
    metadata,
    Column("rate_date", Date, primary_key=True),
    Column("currency", String(3), primary_key=True),
    Column("rate", Numeric(18, 8), nullable=False),
)

# Tables whose content is a function of the sources alone: re-running a run must leave them equal.
DATA_TABLES = (
    "raw_contacts",
    "contacts",
    "leads",
    "lead_links",
    "lead_merges",
    "lead_splits",
    "contact_blocks",
    "contact_features",
    "match_term_counts",
    "match_review",
    "accounts",
    "opportunities",
    "rejects",
    "source_cursors",
    "opportunity_stages",
    "lead_status_history",
    "opportunity_stage_history",
)

# One row per lock held: a run that touches a source (or publishes) takes its row in a transaction
# of its own, so two runs on the same source are serialized on SQLite and PostgreSQL alike.
pipeline_locks = Table(
    "pipeline_locks",
    metadata,
    Column("name", String(128), primary_key=True),
    Column("run_id", ID, nullable=False),
    Column("acquired_at", TS, nullable=False),
    Column("expires_at", TS, nullable=False),
    # host:pid:start of the process holding it; on the same host a dead holder is detected
    Column("holder", String(255)),
)

# What stays of a person who asked to be erased: salted hashes of their email key and phone,
# enough to suppress a later sighting of them and nothing that names them.
erasure_tombstones = Table(
    "erasure_tombstones",
    metadata,
    Column("key_hash", String(64), primary_key=True),
    Column("kind", String(8), nullable=False),
    Column("erased_at", TS, nullable=False),
)

# The qualification rules `rebuild --rules … --apply` applied, by version: later runs score with
# the newest of them, and a file whose content changed under a recorded version is refused.
applied_rules = Table(
    "applied_rules",
    metadata,
    Column("rules_version", String(32), primary_key=True),
    Column("sha256", String(64), nullable=False),
    Column("rules_text", Text, nullable=False),
    Column("path", Text),
    Column("applied_at", TS, nullable=False),
    Column("run_id", ID, nullable=False),
)

# A lead split by a cannot-link decision: the new lead, the lead it came from (which kept its id).
lead_splits = Table(
    "lead_splits",
    metadata,
    Column("lead_id", ID, primary_key=True),
    Column("split_from_lead_id", ID, nullable=False, index=True),
    Column("run_id", ID, nullable=False),
)

# The columns the match model compares, per contact (`transforms.match.MATCH_COLUMNS`), computed
# once when the contact is published: resolution reads these, never whole contacts.
contact_features = Table(
    "contact_features",
    metadata,
    Column("contact_id", ID, primary_key=True),
    *(
        Column(name, Text)
        for name in (
            "first",
            "last",
            "email_key",
            "email_local",
            "email_domain",
            "phone",
            "phone_nsn",
            "company",
            "house",
            "street_name",
            "postcode",
            "city",
            "birth",
            "country",
        )
    ),
)

# How many published contacts hold each value of a term-frequency column: a surname shared by
# thousands is weak evidence, a rare one strong.
match_term_counts = Table(
    "match_term_counts",
    metadata,
    Column("column_name", String(32), primary_key=True),
    Column("value", Text, primary_key=True),
    Column("n", Integer, nullable=False),
)

# Match models trained on this warehouse (`leadflow model train`), by version: Splink's JSON,
# when and on what it was trained, and which one resolution uses (at most one is active; with
# none, the model shipped with leadflow).
match_models = Table(
    "match_models",
    metadata,
    Column("version", String(64), primary_key=True),
    Column("trained_at", TS, nullable=False),
    Column("stats", JSON, nullable=False),
    Column("model", JSON, nullable=False),
    Column("sha256", String(64), nullable=False),
    Column("active", Boolean, nullable=False),
)

# Row counts of the tables the volume check counts, kept by the database itself on PostgreSQL:
# a statement-level trigger on each of them adds a row per INSERT, DELETE or TRUNCATE here with
# how many rows it changed (migration 0017), and the publish folds the rows into one per table
# (`quality.fold_row_counts`). A table's count is then the sum of its rows, a read of a few rows
# instead of a pass over the table, and the same as `count(*)` under the same snapshot:
# the rows of a transaction not yet committed count for neither. raw_contacts' rows are kept per
# source (migration 0018), which the source-quality mart reads. Unused on SQLite, where the
# counts stay `count(*)`.
table_row_deltas = Table(
    "table_row_deltas",
    metadata,
    Column("delta_id", BigInteger, primary_key=True, autoincrement=True),
    Column("table_name", String(64), nullable=False),
    Column("delta", BigInteger, nullable=False),
    Column("source", String(64)),  # raw_contacts' rows only: the source they count
)

# Small facts about the warehouse itself, by key: which definition of the matching columns and
# blocking keys its `contact_features` and `contact_blocks` were built with.
warehouse_state = Table(
    "warehouse_state",
    metadata,
    Column("key", String(64), primary_key=True),
    Column("value", Text, nullable=False),
)
