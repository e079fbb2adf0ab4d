"""The one typed settings object: read from leadflow.yaml, validated, then passed down."""

from __future__ import annotations

import glob
import os
from datetime import date, datetime
from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_serializer,
    field_validator,
    model_validator,
)

from connectors.base import DEFAULT_MAX_FIELD_CHARS
from transforms.fields import CANONICAL
from transforms.qualify import RulesError, rules_from_yaml

DEFAULT_CONFIG = "leadflow.yaml"
DEFAULT_WAREHOUSE_URL = "sqlite:///leadflow.db"


class ConfigError(Exception):
    """A configuration problem, told in one line that names the key or path."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class WarehouseSettings(_Strict):
    url: str = DEFAULT_WAREHOUSE_URL

    @field_serializer("url", when_used="json")
    def _masked(self, url: str) -> str:
        # Settings travel as flow parameters, which Prefect stores as JSON: never the password.
        from flows.logmask import mask

        return mask(url, personal=False)


class QualitySettings(_Strict):
    """Thresholds of the data-quality gate and where each run's Data Docs site is written."""

    docs_dir: str = "leadflow_docs"
    docs_keep: Annotated[int, Field(ge=1)] = 30  # the newest sites kept; older ones are removed
    volume_max_change: Annotated[float, Field(gt=0)] = 0.5
    freshness_hours: Annotated[float, Field(gt=0)] = 24 * 7
    # The published-state checks read what a run changed; every n-th run (0: never) reads the whole
    # tables, so that a row edited outside any run is found (also: `leadflow check`).
    full_checks_every: Annotated[int, Field(ge=0)] = 24


class ResolutionSettings(_Strict):
    """Entity resolution: thresholds on the model's match probability, the block size past which
    a blocking key is too common to compare, and the in-process DuckDB the model runs on."""

    link_probability: Annotated[float, Field(gt=0, lt=1)] = 0.85
    review_probability: Annotated[float, Field(gt=0, lt=1)] = 0.5
    max_block_size: Annotated[int, Field(ge=2)] = 100
    memory_limit: Annotated[str, Field(pattern=r"^[0-9]+(\.[0-9]+)?\s*[KMGT]i?B$")] = "1GB"
    threads: Annotated[int, Field(ge=1)] = 2
    temp_directory: str | None = None  # where DuckDB spills past memory_limit (its default: .tmp)
    # Pending raw records resolved at once, at most. A run's memory follows a chunk and the
    # context it reads (the existing contacts of every lead sharing a blocking key with it: ~2
    # per new contact at 300k contacts, ~8 at 1M). Once a chunk and its context together pass
    # `context_budget` contacts, the next chunks are smaller in proportion (never below a tenth
    # of `chunk_size`): the memory stays bounded as the warehouse grows, for more chunks.
    chunk_size: Annotated[int, Field(ge=100)] = 50_000
    context_budget: Annotated[int, Field(ge=100)] = 150_000

    @field_validator("review_probability")
    @classmethod
    def _below_link(cls, value: float, info: ValidationInfo) -> float:
        link = info.data.get("link_probability")
        if link is not None and value > link:
            raise ValueError("must not be above link_probability")
        return value


class DaskSettings(_Strict):
    address: str | None = None  # a running scheduler (tcp://host:8786); None starts a LocalCluster
    n_workers: Annotated[int, Field(ge=1)] = 2
    threads_per_worker: Annotated[int, Field(ge=1)] = 1


class LoggingSettings(_Strict):
    mask_personal_data: bool = True  # emails and phones in log lines become <email>, <phone>


_CURRENCY = r"^[A-Z]{3}$"


class MartSettings(_Strict):
    """Where the BI marts live and the one currency their amounts are summed in."""

    schema_: Annotated[str, Field(alias="schema", pattern=r"^[a-z_][a-z0-9_]{0,62}$")] = "marts"
    reporting_currency: Annotated[str, Field(pattern=_CURRENCY)] = "EUR"

    @property
    def schema_name(self) -> str:
        return self.schema_


class FxSettings(_Strict):
    """Exchange-rate files (the ECB's eurofxref CSV, or `date,currency,rate` rows) and their base."""

    base_currency: Annotated[str, Field(pattern=_CURRENCY)] = "EUR"
    rates: list[str] = Field(default_factory=list)


class _SourceBase(_Strict):
    name: Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")]
    enabled: bool = True
    # a record with a longer text field (or nested deeper than 32 levels) is rejected, with why
    max_field_chars: Annotated[int, Field(ge=1024)] = DEFAULT_MAX_FIELD_CHARS


_ENV_NAME = r"^[A-Za-z_][A-Za-z0-9_]{0,127}$"
EnvName = Annotated[str, Field(pattern=_ENV_NAME)]


def _column_map(columns: dict[str, str]) -> dict[str, str]:
    """A `columns:` map whose every target is a field leadflow has; else one line naming it."""
    import difflib

    for header, target in columns.items():
        if target not in CANONICAL:
            close = difflib.get_close_matches(str(target).lower(), CANONICAL, n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            raise ValueError(
                f"{header!r} maps to {target!r}, which is not a field{hint}; "
                f"valid fields: {', '.join(CANONICAL)}"
            )
    return columns


ColumnMap = Annotated[dict[str, str], AfterValidator(_column_map)]


def _one_of(src: BaseModel, names: tuple[str, ...]) -> None:
    url = getattr(src, "url", None)
    if url is not None and not str(url).startswith(("https://", "http://")):
        raise ValueError("url must start with https:// or http://")
    given = [n for n in names if getattr(src, n) is not None]
    if len(given) != 1:
        what = " or ".join(names)
        raise ValueError(
            f"give exactly one of {what}" + (f" (got {', '.join(given)})" if given else "")
        )


class RateLimitSettings(_Strict):
    """An API's request rate: per second or per minute (one of them), and how many at once."""

    requests_per_second: Annotated[float, Field(gt=0, le=10_000)] | None = None
    requests_per_minute: Annotated[float, Field(gt=0, le=600_000)] | None = None
    burst: Annotated[int, Field(ge=1, le=10_000)] = 1

    @model_validator(mode="after")
    def _one_rate(self) -> RateLimitSettings:
        if (self.requests_per_second is None) == (self.requests_per_minute is None):
            raise ValueError("give exactly one of requests_per_second or requests_per_minute")
        return self

    @property
    def per_second(self) -> float:
        if self.requests_per_second is not None:
            return self.requests_per_second
        assert self.requests_per_minute is not None  # the validator wants one of them
        return self.requests_per_minute / 60.0


class HttpSettings(_Strict):
    """Timeouts, retries and the rate limit of the shared HTTP helper, per source."""

    timeout_seconds: Annotated[float, Field(gt=0, le=600)] = 30.0
    max_attempts: Annotated[int, Field(ge=1, le=20)] = 5
    backoff_seconds: Annotated[float, Field(ge=0, le=60)] = 1.0
    max_pages: Annotated[int, Field(ge=1)] = 1000
    # None: the preset's documented limit (typeform 2/s, hubspot 100 per 10 s), else no limit
    rate_limit: RateLimitSettings | None = None


class SpreadsheetSource(_SourceBase):
    kind: Literal["spreadsheet"]
    path: str | None = None
    url: str | None = None  # a published CSV export (Google Sheets: …/pub?output=csv)
    sheets: list[str] | None = None
    columns: ColumnMap = Field(default_factory=dict)
    # dates rows that have no date column of their own: a fixed date, or the column to read
    received_at: datetime | date | str | None = None
    max_file_bytes: Annotated[int, Field(gt=0)] = 512 * 1024 * 1024
    http: HttpSettings = HttpSettings()

    @model_validator(mode="after")
    def _where(self) -> SpreadsheetSource:
        _one_of(self, ("path", "url"))
        return self


class ImapSettings(_Strict):
    host: str
    port: Annotated[int, Field(gt=0, lt=65536)] | None = None  # 993 for ssl, else 143
    security: Literal["ssl", "starttls", "none"] = "ssl"
    user: str
    password_env: EnvName | None = None
    password_block: str | None = None  # a Prefect Secret block holding the password
    folder: str = "INBOX"
    batch_size: Annotated[int, Field(ge=1, le=5000)] = 200
    timeout_seconds: Annotated[float, Field(gt=0, le=600)] = 60.0
    max_reconnects: Annotated[int, Field(ge=0, le=20)] = 3

    @model_validator(mode="after")
    def _secret(self) -> ImapSettings:
        if (self.password_env is None) == (self.password_block is None):
            raise ValueError("imap: give exactly one of password_env or password_block")
        return self

    @property
    def effective_port(self) -> int:
        return self.port or (993 if self.security == "ssl" else 143)


class EmailSource(_SourceBase):
    kind: Literal["email"]
    path: str | None = None  # an mbox file, a Maildir or a folder of .eml
    imap: ImapSettings | None = None
    internal_domains: list[str] | None = None  # default: the top-level internal_domains
    max_message_bytes: Annotated[int, Field(gt=0)] = 25 * 1024 * 1024

    @model_validator(mode="after")
    def _where(self) -> EmailSource:
        _one_of(self, ("path", "imap"))
        return self


class WebhookSettings(_Strict):
    secret_env: EnvName  # the shared secret posts must carry (X-Leadflow-Secret or HMAC)


class WebformSource(_SourceBase):
    kind: Literal["webform"]
    path: str | None = None  # a JSON export, or a spool folder of .jsonl that webhooks fill
    url: str | None = None  # an API endpoint, read with `preset`
    preset: Literal["typeform", "hubspot", "generic"] | None = None
    token_env: EnvName | None = None
    token_block: str | None = None  # a Prefect Secret block holding the token
    lag_minutes: Annotated[int, Field(ge=0, le=7 * 24 * 60)] = 30
    page_size: Annotated[int, Field(ge=1, le=1000)] | None = None
    http: HttpSettings = HttpSettings()
    # generic preset: where things are in the provider's JSON
    records_path: str | None = None
    id_field: str | None = None
    time_field: str | None = None
    since_param: str | None = None
    next_token_path: str | None = None
    next_token_param: str | None = None
    next_link_path: str | None = None
    page_param: str | None = None
    params: dict[str, str] = Field(default_factory=dict)
    columns: ColumnMap = Field(default_factory=dict)  # field map; wins over aliases
    webhook: WebhookSettings | None = None

    @model_validator(mode="after")
    def _where(self) -> WebformSource:
        _one_of(self, ("path", "url"))
        if self.url is not None and self.preset is None:
            raise ValueError("url needs a preset: typeform, hubspot or generic")
        if self.path is not None and self.preset is not None:
            raise ValueError("preset applies to url, not path")
        if self.token_env is not None and self.token_block is not None:
            raise ValueError("give at most one of token_env or token_block")
        if self.preset == "generic" and not (self.records_path is not None and self.id_field):
            raise ValueError("the generic preset needs records_path and id_field")
        if self.webhook is not None and self.path is None:
            raise ValueError("webhook needs path: the spool folder it writes to")
        return self


class VcardSource(_SourceBase):
    """vCard (.vcf) files: one file, a folder of them, or a glob; read again only when changed."""

    kind: Literal["vcard"]
    path: str
    max_file_bytes: Annotated[int, Field(gt=0)] = 512 * 1024 * 1024


class OpportunityUpdatesSource(_Strict):
    """The CRM's opportunities (won, lost, moved) to apply to the warehouse's: its export files, or
    its API (Salesforce REST query, HubSpot CRM search) read from the last change seen on."""

    name: Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]{1,30}$")]
    path: str | None = None  # a file or a glob, relative to the config file
    layout: Literal["auto", "salesforce", "hubspot", "plain"] = "auto"
    stage_map: dict[str, str] = Field(default_factory=dict)  # CRM stage → opportunity_stages
    api: Literal["salesforce", "hubspot"] | None = None
    # Salesforce: the instance (My Domain) URL; HubSpot: its API host, https://api.hubapi.com
    url: str | None = None
    token_env: EnvName | None = None
    token_block: str | None = None  # a Prefect Secret block holding the token
    http: HttpSettings = HttpSettings()
    page_size: Annotated[int, Field(ge=1, le=200)] = 100  # HubSpot search pages (at most 200)
    multi_currency: bool = False  # Salesforce: the org has CurrencyIsoCode on opportunities
    # a field or property of the CRM's opportunity holding leadflow's opportunity id, if any
    opportunity_id_field: Annotated[str, Field(pattern=r"^[A-Za-z][A-Za-z0-9_]{0,79}$")] | None = (
        None
    )

    @model_validator(mode="after")
    def _where(self) -> OpportunityUpdatesSource:
        if (self.path is None) == (self.api is None):
            raise ValueError("give exactly one of path or api")
        if self.api == "salesforce" and self.url is None:
            raise ValueError("api salesforce needs url: the instance (My Domain) URL")
        if self.url is not None and not self.url.startswith(("https://", "http://")):
            raise ValueError("url must start with https:// or http://")
        if self.api is not None:
            if (self.token_env is None) == (self.token_block is None):
                raise ValueError("an api needs exactly one of token_env or token_block")
        return self


Source = Annotated[
    SpreadsheetSource | EmailSource | WebformSource | VcardSource, Field(discriminator="kind")
]


class Settings(_Strict):
    warehouse: WarehouseSettings = WarehouseSettings()
    quality: QualitySettings = QualitySettings()
    default_region: Annotated[str, Field(pattern=r"^[A-Z]{2}$")] = "TR"
    internal_domains: list[str] = Field(default_factory=list)
    rules: str | None = None
    resolution: ResolutionSettings = ResolutionSettings()
    runner: Literal["threads", "dask"] = "threads"
    dask: DaskSettings = DaskSettings()
    logging: LoggingSettings = LoggingSettings()
    marts: MartSettings = MartSettings()
    fx: FxSettings = FxSettings()
    opportunity_updates: list[OpportunityUpdatesSource] = Field(default_factory=list)
    sources: list[Source] = Field(default_factory=list)

    @field_validator("sources")
    @classmethod
    def _unique_names(cls, sources: list[Source]) -> list[Source]:
        names = [s.name for s in sources]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"source names must be unique: {', '.join(dupes)}")
        return sources

    def source(self, name: str) -> Source:
        for s in self.sources:
            if s.name == name:
                return s
        raise ConfigError(f"sources: no source named {name!r}")


def _loc(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part in {"spreadsheet", "email", "webform", "vcard"}:
            continue  # the discriminator tag pydantic adds to the path
        else:
            out += f".{part}" if out else str(part)
    return out or "(top level)"


def _under(base: Path, raw: str) -> str:
    path = os.path.expanduser(raw)
    return path if os.path.isabs(path) else str(base / path)


def _resolve_paths(settings: Settings, base: Path) -> Settings:
    sources: list[Source] = []
    for i, src in enumerate(settings.sources):
        if isinstance(src, EmailSource) and src.internal_domains is None:
            src = src.model_copy(update={"internal_domains": list(settings.internal_domains)})
        if src.path is None:
            sources.append(src)
            continue
        raw = os.path.expanduser(src.path)
        path = raw if os.path.isabs(raw) else str(base / raw)
        if not (os.path.exists(path) or glob.glob(path)):
            raise ConfigError(f"sources[{i}].path: file not found: {src.path}")
        sources.append(src.model_copy(update={"path": path}))
    update: dict[str, object] = {"sources": sources}
    if settings.fx.rates:
        files = []
        for i, raw in enumerate(settings.fx.rates):
            path = os.path.expanduser(raw)
            path = path if os.path.isabs(path) else str(base / path)
            if not os.path.isfile(path):
                raise ConfigError(f"fx.rates[{i}]: file not found: {raw}")
            files.append(path)
        update["fx"] = settings.fx.model_copy(update={"rates": files})
    if settings.opportunity_updates:
        update["opportunity_updates"] = [
            u.model_copy(update={"path": _under(base, u.path)}) if u.path is not None else u
            for u in settings.opportunity_updates
        ]
    if settings.rules:
        rules = settings.rules if os.path.isabs(settings.rules) else str(base / settings.rules)
        if not os.path.isfile(rules):
            raise ConfigError(f"rules: file not found: {settings.rules}")
        try:
            rules_from_yaml(Path(rules).read_text(encoding="utf-8"), settings.rules)
        except RulesError as exc:
            raise ConfigError(f"rules: {exc}") from None
        update["rules"] = rules
    return settings.model_copy(update=update)


def load_settings(path: str | os.PathLike[str] | None = None) -> Settings:
    """Read, validate and complete the config; raise ConfigError with a one-line reason."""
    cfg_path = Path(path or DEFAULT_CONFIG)
    if not cfg_path.is_file():
        raise ConfigError(f"config: file not found: {cfg_path}")
    try:
        data = yaml.safe_load(cfg_path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"config: {cfg_path}:{where} is not valid YAML") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config: {cfg_path}: the top level must be a mapping")
    try:
        settings = Settings.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = _loc(tuple(err["loc"]))
        msg = "unknown key" if err["type"] == "extra_forbidden" else err["msg"]
        msg = msg.removeprefix("Value error, ")
        if err["type"] == "string_pattern_mismatch" and str(err["loc"][-1]).endswith("_env"):
            msg = "must name an environment variable (the secret itself never goes in the config)"
        raise ConfigError(f"config: {loc}: {msg}") from None
    env_url = os.environ.get("LEADFLOW_WAREHOUSE_URL")
    if env_url:
        settings = settings.model_copy(update={"warehouse": WarehouseSettings(url=env_url)})
    return _resolve_paths(settings, cfg_path.resolve().parent)
