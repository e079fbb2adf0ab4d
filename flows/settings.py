"""The one typed settings object: read from leadflow.yaml, validated, then passed down."""

from __future__ import annotations

import glob
import os
from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
)

from transforms.qualify import RulesError, rules_from_yaml

DEFAULT_CONFIG = "leadflow.yaml"
DEFAULT_WAREHOUSE_URL = "sqlite:///leadflow.db"


class ConfigError(Exception):
    """A configuration problem, told in one line that names the key or path."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class WarehouseSettings(_Strict):
    url: str = DEFAULT_WAREHOUSE_URL


class QualitySettings(_Strict):
    """Thresholds of the data-quality gate and where each run's Data Docs site is written."""

    docs_dir: str = "leadflow_docs"
    volume_max_change: Annotated[float, Field(gt=0)] = 0.5
    freshness_hours: Annotated[float, Field(gt=0)] = 24 * 7


class ResolutionSettings(_Strict):
    """Entity resolution thresholds, on the summed Fellegi–Sunter log2 weight of a pair."""

    link_weight: float = 20.0
    review_weight: float = 10.0
    max_block_size: Annotated[int, Field(ge=2)] = 60
    prior_log2: float = -10.0

    @field_validator("review_weight")
    @classmethod
    def _below_link(cls, value: float, info: ValidationInfo) -> float:
        link = info.data.get("link_weight")
        if link is not None and value > link:
            raise ValueError("must not be above link_weight")
        return value


class DaskSettings(_Strict):
    address: str | None = None  # a running scheduler (tcp://host:8786); None starts a LocalCluster
    n_workers: Annotated[int, Field(ge=1)] = 2
    threads_per_worker: Annotated[int, Field(ge=1)] = 1


class LoggingSettings(_Strict):
    mask_personal_data: bool = True  # emails and phones in log lines become <email>, <phone>


class _SourceBase(_Strict):
    name: Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")]
    enabled: bool = True


class SpreadsheetSource(_SourceBase):
    kind: Literal["spreadsheet"]
    path: str
    sheets: list[str] | None = None
    columns: dict[str, str] = Field(default_factory=dict)


class EmailSource(_SourceBase):
    kind: Literal["email"]
    path: str


class WebformSource(_SourceBase):
    kind: Literal["webform"]
    path: str


Source = Annotated[SpreadsheetSource | EmailSource | WebformSource, Field(discriminator="kind")]


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
        elif part in {"spreadsheet", "email", "webform"}:
            continue  # the discriminator tag pydantic adds to the path
        else:
            out += f".{part}" if out else str(part)
    return out or "(top level)"


def _resolve_paths(settings: Settings, base: Path) -> Settings:
    sources = []
    for i, src in enumerate(settings.sources):
        raw = os.path.expanduser(src.path)
        path = raw if os.path.isabs(raw) else str(base / raw)
        if not (os.path.exists(path) or glob.glob(path)):
            raise ConfigError(f"sources[{i}].path: file not found: {src.path}")
        sources.append(src.model_copy(update={"path": path}))
    update: dict[str, object] = {"sources": sources}
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
        raise ConfigError(f"config: {loc}: {msg}") from None
    env_url = os.environ.get("LEADFLOW_WAREHOUSE_URL")
    if env_url:
        settings = settings.model_copy(update={"warehouse": WarehouseSettings(url=env_url)})
    return _resolve_paths(settings, cfg_path.resolve().parent)
