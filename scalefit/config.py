"""One settings object that every command reads: option > environment > ``scalefit.toml`` > default.

``scalefit.toml`` (every key optional; shown with its default)::

    [store]
    db = "scalefit.duckdb"      # DuckDB file
    reports = "reports"         # folder for Parquet reports and plots
    storage_version = "v1.4.0"  # DuckDB storage format of a new store (v1.4.0: DuckDB 1.4+ open it)

    [ingest]
    folders = []                # log folders ingested on every refresh
    project = "default"         # project name for runs found there

    [fit]
    laws = ["chinchilla"]       # fitted per project: names of `scalefit fit --law` (the
                                # vocabulary's LAW_NAMES, schemas/vocabulary.py)
    where = ""                  # predicate on `runs` selecting the data to fit ("" = all)
    bootstrap = 200             # bootstrap resamples of refresh's fits (0: no intervals)
    seed = 0
    resample = "runs"           # points | runs | params
    points = "final"            # final | checkpoints | envelope: which observations of
                                # each run are fitted (the vocabulary's POINT_MODES)

    [scale]
    task_runner = "threads"     # where bootstrap jobs run: threads | dask
    jobs = 1                    # bootstrap jobs per fit (its resamples split evenly)
    workers = 0                 # threads, or local Dask worker processes (0 = one per core)
    dask_address = ""           # a running Dask scheduler, e.g. "tcp://10.0.0.5:8786";
                                # "" with task_runner = "dask" starts a local cluster

    [upstream]
    offline = false             # true: never download, use the cache only
    cache = ""                  # "" = the platform cache, ~/.cache/scalefit/upstream
    mirror = ""                 # "" = none; a local mirror of the studies' files, found as
                                # <mirror>/<study>/<path upstream>; verified like a download

    [schedule]
    cron = "0 3 * * *"          # for `scalefit serve` and the prefect.yaml deployment
    timezone = "UTC"

Relative paths in the file are relative to the file's folder; relative paths given by an
option or an environment variable are relative to the working directory. Each key has one
environment variable (:data:`KEYS`, e.g. ``SCALEFIT_DB``). A value is checked once, where it
is read, and a bad one is one line naming where it came from, the key, the value and what is
allowed (:class:`~scalefit.errors.ConfigError`).

Why the layering is written here rather than with pydantic-settings' sources: the values are
validated by a strict pydantic model, but the file's values must be checked strictly (``jobs =
true`` or ``folders = "logs/"`` are errors) while environment strings are parsed, each error
must say which layer the value came from, and the file's relative paths resolve against the
file's folder; pydantic-settings merges its sources into one dict before validating, which
loses all three.
"""

from __future__ import annotations

import importlib.util
import os
import re
import reprlib
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from .errors import ConfigError

CONFIG_FILE = "scalefit.toml"

TASK_RUNNERS = ("threads", "dask")
"""Where a refresh runs its bootstrap jobs (``[scale] task_runner``)."""

STORAGE_VERSION = "v1.4.0"
"""Default DuckDB storage version of a new store: the newest DuckDB 1.4 (CLI, DBeaver, R and
Node clients of the 1.4 line) reads. DuckDB 1.5 and 2.x read it too."""

MAX_JOBS = 1024
"""Upper bound of ``[scale] jobs`` and ``workers``: more is a typo, not a machine."""

MAX_BOOTSTRAP = 1_000_000


@dataclass(frozen=True, slots=True)
class Key:
    """One setting: where it lives in the file, its field, its environment variable."""

    section: str
    key: str
    field: str
    env: str
    allowed: str
    kind: str = "str"
    """How an environment string is read: str, int, bool, path, paths, names."""

    @property
    def name(self) -> str:
        return f"[{self.section}] {self.key}"


KEYS: tuple[Key, ...] = (
    Key("store", "db", "db", "SCALEFIT_DB", "a path to a DuckDB file", "path"),
    Key("store", "reports", "reports", "SCALEFIT_REPORTS", "a folder path", "path"),
    Key(
        "store",
        "storage_version",
        "storage_version",
        "SCALEFIT_STORAGE_VERSION",
        'a DuckDB version such as "v1.4.0" (the oldest DuckDB that must open the store), '
        'or "latest"',
    ),
    Key(
        "ingest",
        "folders",
        "log_folders",
        "SCALEFIT_INGEST_FOLDERS",
        'a list of folder paths, e.g. ["logs/"] (environment: separated by "' + os.pathsep + '")',
        "paths",
    ),
    Key("ingest", "project", "project", "SCALEFIT_PROJECT", "a non-empty project name"),
    Key("fit", "laws", "fit_laws", "SCALEFIT_FIT_LAWS", "", "names"),  # allowed: see _law_names
    Key("fit", "where", "fit_where", "SCALEFIT_FIT_WHERE", "a predicate on `runs` as a string"),
    Key(
        "fit",
        "bootstrap",
        "bootstrap",
        "SCALEFIT_FIT_BOOTSTRAP",
        f"a whole number from 0 to {MAX_BOOTSTRAP:_}",
        "int",
    ),
    Key("fit", "seed", "seed", "SCALEFIT_FIT_SEED", "a whole number >= 0", "int"),
    Key("fit", "resample", "resample", "SCALEFIT_FIT_RESAMPLE", "one of points, runs, params"),
    Key("fit", "points", "fit_points", "SCALEFIT_FIT_POINTS", ""),  # allowed: see _point_modes
    Key(
        "scale",
        "task_runner",
        "task_runner",
        "SCALEFIT_SCALE_TASK_RUNNER",
        "one of " + ", ".join(TASK_RUNNERS),
    ),
    Key(
        "scale",
        "jobs",
        "jobs",
        "SCALEFIT_SCALE_JOBS",
        f"a whole number from 1 to {MAX_JOBS}",
        "int",
    ),
    Key(
        "scale",
        "workers",
        "workers",
        "SCALEFIT_SCALE_WORKERS",
        f"a whole number from 0 (one per core) to {MAX_JOBS}",
        "int",
    ),
    Key(
        "scale",
        "dask_address",
        "dask_address",
        "SCALEFIT_SCALE_DASK_ADDRESS",
        'a Dask scheduler address such as "tcp://10.0.0.5:8786", or ""',
    ),
    Key("upstream", "offline", "offline", "SCALEFIT_OFFLINE", "true or false", "bool"),
    Key("upstream", "cache", "cache", "SCALEFIT_CACHE", 'a folder path, or ""', "path"),
    Key(
        "upstream",
        "mirror",
        "mirror",
        "SCALEFIT_UPSTREAM_MIRROR",
        'a folder path (a local mirror of the upstream repositories), or ""',
        "path",
    ),
    Key(
        "schedule",
        "cron",
        "cron",
        "SCALEFIT_CRON",
        'a cron schedule of 5 fields (6 with seconds first), e.g. "0 3 * * *"',
    ),
    Key(
        "schedule",
        "timezone",
        "timezone",
        "SCALEFIT_TIMEZONE",
        'an IANA time zone, e.g. "UTC" or "Europe/Paris"',
    ),
)
"""Every setting, in the order of the file; the README's table lists the same."""

_BY_FIELD = {k.field: k for k in KEYS}
_SECTIONS: dict[str, dict[str, Key]] = {}
for _k in KEYS:
    _SECTIONS.setdefault(_k.section, {})[_k.key] = _k
_OPTIONAL_PATHS = {"cache", "mirror"}

_repr = reprlib.Repr()
_repr.maxlevel, _repr.maxstring, _repr.maxother, _repr.maxlist = 2, 60, 60, 4


def _show(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, Path):
        value = str(value)
    if isinstance(value, tuple):
        value = [str(v) if isinstance(v, Path) else v for v in value]
    return _repr.repr(value)


def _law_names() -> tuple[str, ...]:
    from .schemas.vocabulary import LAW_NAMES

    return tuple(LAW_NAMES)


def _point_modes() -> tuple[str, ...]:
    from .schemas.vocabulary import POINT_MODES

    return POINT_MODES


class Settings(BaseModel):
    """Every setting of every command, typed and checked; see the module docstring.

    Build it with :func:`load_settings` (which reads the layers); ``Settings()`` is the
    built-in defaults.
    """

    model_config = ConfigDict(strict=True, frozen=True, extra="forbid", defer_build=True)

    db: Path = Path("scalefit.duckdb")
    reports: Path = Path("reports")
    storage_version: str = STORAGE_VERSION
    log_folders: tuple[Path, ...] = ()
    project: str = Field("default", min_length=1)
    fit_laws: tuple[str, ...] = Field(("chinchilla",), min_length=1)
    fit_where: str = ""
    bootstrap: int = Field(200, ge=0, le=MAX_BOOTSTRAP)
    seed: int = Field(0, ge=0, le=2**63 - 1)
    resample: Literal["points", "runs", "params"] = "runs"
    fit_points: str = "final"
    task_runner: Literal["threads", "dask"] = "threads"
    jobs: int = Field(1, ge=1, le=MAX_JOBS)
    workers: int = Field(0, ge=0, le=MAX_JOBS)
    dask_address: str = ""
    offline: bool = False
    cache: Path | None = None
    mirror: Path | None = None
    cron: str = "0 3 * * *"
    timezone: str = "UTC"
    source: Path | None = Field(default=None, exclude=True)
    """The file these settings were read from, if any."""

    @field_validator("db", "reports")
    @classmethod
    def _non_empty_path(cls, value: Path) -> Path:
        if str(value) in ("", "."):
            raise ValueError("must not be empty")
        return value

    @field_validator("storage_version")
    @classmethod
    def _storage_version(cls, value: str) -> str:
        if value != "latest" and not re.fullmatch(r"v\d+\.\d+\.\d+", value):
            raise ValueError("not a DuckDB version")
        return value

    @field_validator("fit_laws")
    @classmethod
    def _laws(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        names = _law_names()
        bad = [law for law in value if law not in names]
        if bad:
            raise ValueError(f"unknown law {', '.join(map(repr, bad))}")
        return value

    @field_validator("fit_points")
    @classmethod
    def _points(cls, value: str) -> str:
        if value not in _point_modes():
            raise ValueError("unknown point mode")
        return value

    @field_validator("fit_where")
    @classmethod
    def _where(cls, value: str) -> str:
        if not value.strip():
            return value
        from .errors import QueryError
        from .user_sql import check_predicate  # imported only when there is a predicate

        try:
            return check_predicate(value)
        except QueryError as exc:
            raise ValueError(str(exc)) from None

    @field_validator("timezone")
    @classmethod
    def _timezone(cls, value: str) -> str:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError("unknown time zone") from None
        return value

    @field_validator("cron")
    @classmethod
    def _cron(cls, value: str) -> str:
        from .schedule import check_cron

        try:
            check_cron(value)
        except ConfigError as exc:
            detail = str(exc).replace(f"cron `{value}` ", "").removeprefix("is not valid: ")
            raise ValueError(detail) from None
        return value

    def with_overrides(self, **changes: Any) -> Settings:
        """A checked copy with the given (non-None) settings changed (field names)."""
        given = {k: v for k, v in changes.items() if v is not None}
        values = {**self.model_dump(), **given}
        origins = dict.fromkeys(given, "argument")
        return _validate(values, origins, self.source)


def _build_without_plugins() -> None:
    """Build :class:`Settings`' validator with pydantic's plugins turned off (pydantic's
    documented ``PYDANTIC_DISABLE_PLUGINS``, set only while building, as typer does for its
    own validators): looking plugins up reads the entry points of every installed
    distribution (~15 ms of every command's start-up), and no plugin has any business with
    scalefit's settings."""
    previous = os.environ.get("PYDANTIC_DISABLE_PLUGINS")
    os.environ["PYDANTIC_DISABLE_PLUGINS"] = "__all__"
    try:
        Settings.model_rebuild(force=True)
    finally:
        if previous is None:
            del os.environ["PYDANTIC_DISABLE_PLUGINS"]
        else:
            os.environ["PYDANTIC_DISABLE_PLUGINS"] = previous


_build_without_plugins()


def _allowed(key: Key) -> str:
    if key.allowed:
        return key.allowed
    if key.field == "fit_points":
        return "one of " + ", ".join(_point_modes())
    return "one or more of " + ", ".join(_law_names())


def _error(key: Key, value: Any, origin: str, detail: str | None) -> ConfigError:
    allowed = _allowed(key)
    reason = f"{detail}; allowed: {allowed}" if detail else f"allowed: {allowed}"
    return ConfigError(f"{origin}: {key.name} = {_show(value)} is not valid: {reason}")


def _validate(values: dict[str, Any], origins: Mapping[str, str], source: Path | None) -> Settings:
    try:
        where: dict[str, Any] = {} if source is None else {"source": source}
        settings = Settings(**values, **where)
    except ValidationError as exc:
        err = exc.errors(include_url=False)[0]
        field = str(err["loc"][0]) if err["loc"] else ""
        key = _BY_FIELD.get(field)
        if key is None:  # an unknown field: only a programming error gets here
            raise ConfigError(f"unknown setting {field!r}") from None
        detail = None
        if err["type"] == "value_error":
            detail = str(err.get("ctx", {}).get("error", "")) or None
        raise _error(key, values.get(field), origins.get(field, "default"), detail) from None
    _check_combinations(settings, origins)
    return settings


def _check_combinations(settings: Settings, origins: Mapping[str, str]) -> None:
    if settings.dask_address and settings.task_runner != "dask":
        key = _BY_FIELD["dask_address"]
        raise _error(
            key,
            settings.dask_address,
            origins.get("dask_address", "default"),
            'needs [scale] task_runner = "dask"',
        )
    if settings.task_runner == "dask" and importlib.util.find_spec("prefect_dask") is None:
        key = _BY_FIELD["task_runner"]
        raise ConfigError(
            f'{origins.get("task_runner", "default")}: {key.name} = "dask" needs prefect-dask: '
            'pip install "scalefit[dask]"'
        )


def _read_file(path: Path) -> dict[str, Any]:
    """The file's values by field name, relative paths resolved against the file's folder."""
    try:
        doc = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"no config file at {path}") from None
    except RecursionError:
        raise ConfigError(f"{path}: cannot read it: nested too deeply") from None
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read it: {exc}") from None
    base = path.resolve().parent
    values: dict[str, Any] = {}
    for section, body in doc.items():
        if section not in _SECTIONS:
            raise ConfigError(
                f"{path}: unknown section [{section}]; allowed: {', '.join(_SECTIONS)}"
            )
        if not isinstance(body, dict):
            raise ConfigError(
                f"{path}: `{section}` must be a section [{section}] of keys, not {_show(body)}"
            )
        for name, value in body.items():
            key = _SECTIONS[section].get(name)
            if key is None:
                raise ConfigError(
                    f"{path}: unknown key `{name}` in [{section}]; allowed: "
                    f"{', '.join(_SECTIONS[section])}"
                )
            values[key.field] = _from_file(key, value, base)
    return values


def _from_file(key: Key, value: Any, base: Path) -> Any:
    """A TOML value as the field takes it; a wrong type is left for the model to refuse."""
    if key.kind == "path" and isinstance(value, str):
        if not value:
            return None if key.field in _OPTIONAL_PATHS else value
        return base / value
    if key.kind == "paths" and isinstance(value, list):
        return tuple(base / v if isinstance(v, str) and v else v for v in value)
    if key.kind == "names" and isinstance(value, list):
        return tuple(value)
    return value


_TRUE, _FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off")


def _from_env(key: Key, text: str) -> Any:
    """An environment string as the field takes it (unparseable text is left to be refused)."""
    text = text.strip()
    if key.kind == "int":
        return int(text) if re.fullmatch(r"[+-]?\d{1,30}", text) else text
    if key.kind == "bool":
        low = text.lower()
        return True if low in _TRUE else False if low in _FALSE else text
    if key.kind == "path":
        return Path(text)
    if key.kind == "paths":
        return tuple(Path(p) for p in text.split(os.pathsep) if p.strip())
    if key.kind == "names":
        return tuple(n.strip() for n in text.split(",") if n.strip())
    return text


def load_settings(
    path: str | os.PathLike[str] | None = None,
    *,
    options: Mapping[str, tuple[str, Any]] | None = None,
    environ: Mapping[str, str] | None = None,
) -> Settings:
    """The settings: ``options`` > environment > ``path`` (or ``./scalefit.toml``) > defaults.

    Parameters
    ----------
    path
        Config file; default ``$SCALEFIT_CONFIG``, else ``./scalefit.toml`` when it exists
        (none is fine). An explicit path that does not exist is an error.
    options
        Command-line values by field name: ``{"db": ("--db", Path(...))}``; a value of None
        means the option was not given.
    environ
        Environment (default ``os.environ``); an empty variable counts as unset.

    Raises
    ------
    ConfigError
        Unreadable TOML, an unknown section or key (with the allowed ones), a bad value
        (naming where it came from, the key, the value and what is allowed).
    """
    environ = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    origins: dict[str, str] = {}
    source: Path | None = None
    if path is None:
        path = environ.get("SCALEFIT_CONFIG", "").strip() or None
    if path is None and Path(CONFIG_FILE).is_file():
        path = CONFIG_FILE
    if path is not None:
        source = Path(path)
        for field, value in _read_file(source).items():
            values[field], origins[field] = value, str(source)
    for key in KEYS:
        text = environ.get(key.env, "")
        if text.strip():
            values[key.field] = _from_env(key, text)
            origins[key.field] = f"environment variable {key.env}"
    for field, (flag, value) in (options or {}).items():
        if value is not None:
            kind = _BY_FIELD[field].kind
            if isinstance(value, list | tuple):
                value = tuple(
                    Path(v) if kind == "paths" and isinstance(v, str) else v for v in value
                )
            elif kind == "path" and isinstance(value, str):
                value = Path(value)
            values[field], origins[field] = value, f"option {flag}"
    return _validate(values, origins, source)
