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
is read, and each bad one is one line naming where it came from, the key, the value and what
is allowed; every bad value (and unknown key) of one reading is said, one line each, in one
:class:`~scalefit.errors.ConfigError`.

Why the layering and the checks are written here rather than with pydantic(-settings): the
file's values must be checked strictly (``jobs = true``, ``jobs = "4"`` or ``folders =
"logs/"`` are errors) while environment strings are parsed, each error must say which layer
the value came from, and the file's relative paths resolve against the file's folder;
pydantic-settings merges its sources into one dict before validating, which loses all three.
And the checks are a table of small functions (:data:`_FIELDS`, :mod:`._config_checks`)
rather than a pydantic model: importing pydantic and building the model cost ~75 ms of every
command's start-up, more than reading and checking the settings takes in all.
"""

from __future__ import annotations

import importlib.util
import os
import re
import reprlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any, ClassVar, Literal

from . import _config_checks as check
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
    Key("fit", "laws", "fit_laws", "SCALEFIT_FIT_LAWS", "", "names"),  # allowed: check.law_names
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
    Key("fit", "points", "fit_points", "SCALEFIT_FIT_POINTS", ""),  # allowed: check.point_modes
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


_FIELDS: dict[str, tuple[Any, Callable[[Any], Any]]] = {
    "db": (Path("scalefit.duckdb"), check.non_empty_path),
    "reports": (Path("reports"), check.non_empty_path),
    "storage_version": (STORAGE_VERSION, check.storage_version),
    "log_folders": ((), check.paths),
    "project": ("default", check.non_empty_str),
    "fit_laws": (("chinchilla",), check.laws),
    "fit_where": ("", check.where),
    "bootstrap": (200, check.whole(0, MAX_BOOTSTRAP)),
    "seed": (0, check.whole(0, 2**63 - 1)),
    "resample": ("runs", check.one_of("points", "runs", "params")),
    "fit_points": ("final", check.point_mode),
    "task_runner": ("threads", check.one_of(*TASK_RUNNERS)),
    "jobs": (1, check.whole(1, MAX_JOBS)),
    "workers": (0, check.whole(0, MAX_JOBS)),
    "dask_address": ("", check.string),
    "offline": (False, check.boolean),
    "cache": (None, check.optional_path),
    "mirror": (None, check.optional_path),
    "cron": ("0 3 * * *", check.cron),
    "timezone": ("UTC", check.timezone),
    "source": (None, check.optional_path),
}
"""Every field of :class:`Settings`, in the order they are checked: its default (never
checked, as it is known good) and the check of a given value, which returns the value as
stored (a ``where`` predicate is normalised) or raises :class:`~scalefit._config_checks.Bad`."""


class Settings:
    """Every setting of every command, typed and checked; see the module docstring.

    Build it with :func:`load_settings` (which reads the layers); ``Settings()`` is the
    built-in defaults, ``Settings(jobs=2)`` the defaults with a checked change (a bad value is
    a :class:`~scalefit.errors.ConfigError`). Frozen, compared and hashed by value.

    A plain class rather than a pydantic model: pydantic's import and schema build were ~75 ms
    of every command's start-up (``benchmarks/RESULTS.md``). The names callers read besides the
    fields are pydantic's: :attr:`model_fields`, :attr:`model_fields_set`, :meth:`model_dump`.
    """

    __slots__ = ("_fields_set", *_FIELDS)

    db: Path
    reports: Path
    storage_version: str
    log_folders: tuple[Path, ...]
    project: str
    fit_laws: tuple[str, ...]
    fit_where: str
    bootstrap: int
    seed: int
    resample: Literal["points", "runs", "params"]
    fit_points: str
    task_runner: Literal["threads", "dask"]
    jobs: int
    workers: int
    dask_address: str
    offline: bool
    cache: Path | None
    mirror: Path | None
    cron: str
    timezone: str
    source: Path | None
    """The file these settings were read from, if any (not part of :meth:`model_dump`)."""
    _fields_set: frozenset[str]

    model_fields: ClassVar[Mapping[str, Any]] = MappingProxyType(
        {name: default for name, (default, _) in _FIELDS.items()}
    )
    """Every field's name and default."""

    def __init__(self, **values: Any) -> None:
        unknown = [name for name in values if name not in _FIELDS]
        if unknown:  # only a programming error gets here
            raise ConfigError(f"unknown setting {unknown[0]!r}")
        bad: list[tuple[str, Any, str | None]] = []
        for name, (default, checked) in _FIELDS.items():
            value = default
            if name in values:
                try:
                    value = checked(values[name])
                except check.Bad as exc:
                    bad.append((name, values[name], exc.detail))
            object.__setattr__(self, name, value)
        if bad:
            raise _Invalid(bad)
        object.__setattr__(self, "_fields_set", frozenset(values))

    @property
    def model_fields_set(self) -> frozenset[str]:
        """The fields given a value (by a layer, or as an argument), rather than defaulted."""
        return self._fields_set

    def model_dump(self) -> dict[str, Any]:
        """Every setting by field name (``source`` excluded)."""
        return {name: getattr(self, name) for name in _FIELDS if name != "source"}

    def _values(self) -> tuple[Any, ...]:
        return tuple(getattr(self, name) for name in _FIELDS)

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(f"settings are frozen: cannot set {name!r}")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"settings are frozen: cannot delete {name!r}")

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Settings):
            return NotImplemented
        return self._values() == other._values()

    def __hash__(self) -> int:
        return hash(self._values())

    def __repr__(self) -> str:
        body = ", ".join(f"{name}={getattr(self, name)!r}" for name in _FIELDS)
        return f"Settings({body})"

    def __reduce__(self) -> tuple[Any, ...]:
        given = {name: getattr(self, name) for name in self._fields_set}
        return (_restore, (given,))

    def with_overrides(self, **changes: Any) -> Settings:
        """A checked copy with the given (non-None) settings changed (field names)."""
        given = {k: v for k, v in changes.items() if v is not None}
        values = {**self.model_dump(), **given}
        origins = dict.fromkeys(given, "argument")
        return _validate(values, origins, self.source)


def _restore(given: dict[str, Any]) -> Settings:
    return Settings(**given)


def _allowed(key: Key) -> str:
    if key.allowed:
        return key.allowed
    if key.field == "fit_points":
        return "one of " + ", ".join(check.point_modes())
    return "one or more of " + ", ".join(check.law_names())


def _error(key: Key, value: Any, origin: str, detail: str | None) -> ConfigError:
    allowed = _allowed(key)
    reason = f"{detail}; allowed: {allowed}" if detail else f"allowed: {allowed}"
    return ConfigError(f"{origin}: {key.name} = {_show(value)} is not valid: {reason}")


class _Invalid(ConfigError):
    """The bad values given to :class:`Settings` (field, value, detail), in the order of
    :data:`KEYS`: said as arguments' until :func:`_validate` names the layer each came from."""

    def __init__(self, bad: list[tuple[str, Any, str | None]]) -> None:
        self.bad = bad
        super().__init__("\n".join(str(_said(f, v, "argument", d)) for f, v, d in bad))


def _said(field: str, value: Any, origin: str, detail: str | None) -> ConfigError:
    key = _BY_FIELD.get(field)
    if key is None:  # `source`: only a programming error gets here
        return ConfigError(f"{origin}: {field} = {_show(value)} is not valid: {detail or ''}")
    return _error(key, value, origin, detail)


def _validate(
    values: dict[str, Any],
    origins: Mapping[str, str],
    source: Path | None,
    problems: tuple[str, ...] = (),
) -> Settings:
    """:class:`Settings` of ``values``. Every bad value (in the order of :data:`KEYS`) is one
    line naming the layer it came from (``origins``, by field; else the default), after the
    ``problems`` already found (the file's unknown keys); all of them in one
    :class:`~scalefit.errors.ConfigError`. Combinations are checked once every value is good."""
    where: dict[str, Any] = {} if source is None else {"source": source}
    lines = list(problems)
    try:
        settings = Settings(**values, **where)
    except _Invalid as invalid:
        lines += [str(_said(f, v, origins.get(f, "default"), d)) for f, v, d in invalid.bad]
    if lines:
        raise ConfigError("\n".join(lines))
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


def _read_file(path: Path) -> tuple[dict[str, Any], list[str]]:
    """The file's values by field name, relative paths resolved against the file's folder,
    and one line per unknown section or key (said together with any bad value)."""
    import tomllib  # ~5 ms: only where a file is read (most commands run without one)

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
    problems: list[str] = []
    for section, body in doc.items():
        if section not in _SECTIONS:
            problems.append(f"{path}: unknown section [{section}]; allowed: {', '.join(_SECTIONS)}")
        elif not isinstance(body, dict):
            problems.append(
                f"{path}: `{section}` must be a section [{section}] of keys, not {_show(body)}"
            )
        else:
            for name, value in body.items():
                key = _SECTIONS[section].get(name)
                if key is None:
                    problems.append(
                        f"{path}: unknown key `{name}` in [{section}]; allowed: "
                        f"{', '.join(_SECTIONS[section])}"
                    )
                else:
                    values[key.field] = _from_file(key, value, base)
    return values, problems


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
        Unreadable TOML; else every unknown section or key (with the allowed ones) and every
        bad value (naming where it came from, the key, the value and what is allowed), one
        line each.
    """
    environ = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    origins: dict[str, str] = {}
    source: Path | None = None
    problems: list[str] = []
    if path is None:
        path = environ.get("SCALEFIT_CONFIG", "").strip() or None
    if path is None and Path(CONFIG_FILE).is_file():
        path = CONFIG_FILE
    if path is not None:
        source = Path(path)
        from_file, problems = _read_file(source)
        for field, value in from_file.items():
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
    return _validate(values, origins, source, tuple(problems))
