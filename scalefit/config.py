"""``scalefit.toml``: one file for what a scheduled refresh does, with defaults when absent.

Example (every key optional; shown with its default)::

    [store]
    db = "scalefit.duckdb"      # DuckDB file
    reports = "reports"         # folder for Parquet reports and plots

    [ingest]
    folders = []                # log folders ingested on every refresh
    project = "default"         # project name for runs found there

    [fit]
    laws = ["chinchilla"]       # fitted per project: chinchilla, kaplan-n, kaplan-d, kaplan-c,
                                # kaplan-nd, isoflop, envelope
    where = ""                  # SQL predicate on `runs` selecting the data to fit ("" = all)
    bootstrap = 200             # bootstrap resamples (0: no intervals)
    seed = 0
    resample = "runs"           # points | runs | params

    [scale]
    task_runner = "threads"     # where bootstrap jobs run: threads | dask
    jobs = 1                    # bootstrap jobs per fit (its resamples split evenly)
    workers = 0                 # threads, or local Dask worker processes (0 = one per core)
    dask_address = ""           # a running Dask scheduler, e.g. "tcp://10.0.0.5:8786";
                                # "" with task_runner = "dask" starts a local cluster

    [upstream]
    offline = false             # true: never download, use the cache only
    cache = ""                  # "" = $SCALEFIT_CACHE or ~/.cache/scalefit/upstream
    mirror = ""                 # a local mirror of the studies' files, found as
                                # <mirror>/<study>/<path upstream>; verified like a download
                                # ($SCALEFIT_UPSTREAM_MIRROR overrides it)

    [schedule]
    cron = "0 3 * * *"          # for `scalefit serve` and prefect.yaml
    timezone = "UTC"

Relative paths are relative to the file's folder.
"""

from __future__ import annotations

import importlib.util
import os
import tomllib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from .errors import ConfigError

CONFIG_FILE = "scalefit.toml"

TASK_RUNNERS = ("threads", "dask")
"""Where a refresh runs its bootstrap jobs (``[scale] task_runner``)."""


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything a refresh needs to know; see the module docstring for the file format."""

    db: Path = Path("scalefit.duckdb")
    reports: Path = Path("reports")
    log_folders: tuple[Path, ...] = ()
    project: str = "default"
    fit_laws: tuple[str, ...] = ("chinchilla",)
    fit_where: str = ""
    bootstrap: int = 200
    seed: int = 0
    resample: str = "runs"
    task_runner: str = "threads"
    jobs: int = 1
    workers: int = 0
    dask_address: str = ""
    offline: bool = False
    cache: Path | None = None
    mirror: Path | None = None
    cron: str = "0 3 * * *"
    timezone: str = "UTC"
    source: Path | None = field(default=None, compare=False)
    """The file these settings were read from, if any."""

    def with_overrides(self, **changes: Any) -> Settings:
        """A copy with the given (non-None) settings changed."""
        return replace(self, **{k: v for k, v in changes.items() if v is not None})


_KEYS = {
    "store": {"db": "db", "reports": "reports"},
    "ingest": {"folders": "log_folders", "project": "project"},
    "fit": {
        "laws": "fit_laws",
        "where": "fit_where",
        "bootstrap": "bootstrap",
        "seed": "seed",
        "resample": "resample",
    },
    "scale": {
        "task_runner": "task_runner",
        "jobs": "jobs",
        "workers": "workers",
        "dask_address": "dask_address",
    },
    "upstream": {"offline": "offline", "cache": "cache", "mirror": "mirror"},
    "schedule": {"cron": "cron", "timezone": "timezone"},
}
_PATHS = {"db", "reports", "cache", "mirror"}


def _check_settings(settings: Settings, where: str) -> Settings:
    from .fit import LAW_NAMES, RESAMPLE

    bad = [law for law in settings.fit_laws if law not in LAW_NAMES]
    if bad:
        raise ConfigError(f"{where}: `fit.laws` has {bad}; allowed: {', '.join(LAW_NAMES)}")
    if settings.resample not in RESAMPLE:
        raise ConfigError(f"{where}: `fit.resample` must be one of {', '.join(RESAMPLE)}")
    if settings.bootstrap < 0:
        raise ConfigError(f"{where}: `fit.bootstrap` must be >= 0")
    if settings.task_runner not in TASK_RUNNERS:
        raise ConfigError(
            f"{where}: `scale.task_runner` must be one of {', '.join(TASK_RUNNERS)}, "
            f"not {settings.task_runner!r}"
        )
    if settings.jobs < 1:
        raise ConfigError(f"{where}: `scale.jobs` must be >= 1")
    if settings.workers < 0:
        raise ConfigError(f"{where}: `scale.workers` must be >= 0 (0: one per core)")
    if settings.dask_address and settings.task_runner != "dask":
        raise ConfigError(f'{where}: `scale.dask_address` needs `scale.task_runner = "dask"`')
    if settings.task_runner == "dask" and importlib.util.find_spec("prefect_dask") is None:
        raise ConfigError(
            f'{where}: `scale.task_runner = "dask"` needs prefect-dask: '
            'pip install "scalefit[dask]"'
        )
    if len(settings.cron.split()) != 5:
        raise ConfigError(f'{where}: `schedule.cron` must have 5 fields, e.g. "0 3 * * *"')
    return settings


def load_settings(path: str | os.PathLike[str] | None = None) -> Settings:
    """Read settings from ``path``, or ``./scalefit.toml`` if it exists, else the defaults.

    Raises
    ------
    ConfigError
        Unreadable TOML, an unknown section or key (with the allowed ones), a bad value.
    """
    if path is None:
        if not Path(CONFIG_FILE).is_file():
            return _check_settings(_mirror_from_env(Settings()), "defaults")
        path = CONFIG_FILE
    path = Path(path)
    try:
        doc = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"no config file at {path}") from None
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read it: {exc}") from exc
    base = path.resolve().parent
    values: dict[str, Any] = {}
    for section, body in doc.items():
        if section not in _KEYS or not isinstance(body, dict):
            raise ConfigError(f"{path}: unknown section [{section}]; allowed: {', '.join(_KEYS)}")
        for key, value in body.items():
            if key not in _KEYS[section]:
                raise ConfigError(
                    f"{path}: unknown key `{section}.{key}`; allowed: {', '.join(_KEYS[section])}"
                )
            name = _KEYS[section][key]
            if name in _PATHS:
                value = (base / value) if value else None
            elif name == "log_folders":
                value = tuple(base / v for v in value)
            elif name == "fit_laws":
                value = tuple(value)
            values[name] = value
    typed = (
        ("bootstrap", int),
        ("seed", int),
        ("jobs", int),
        ("workers", int),
        ("offline", bool),
        ("task_runner", str),
        ("dask_address", str),
    )
    for name, expected in typed:
        value = values.get(name)
        if value is not None and (type(value) is not expected):
            kind = {int: "whole number", bool: "true or false", str: "string"}[expected]
            raise ConfigError(f"{path}: `{name}` must be a {kind}, not {value!r}")
    return _check_settings(_mirror_from_env(Settings(source=path, **values)), str(path))


def _mirror_from_env(settings: Settings) -> Settings:
    """``SCALEFIT_UPSTREAM_MIRROR`` (non-empty) overrides ``[upstream] mirror``."""
    env = os.environ.get("SCALEFIT_UPSTREAM_MIRROR", "").strip()
    return replace(settings, mirror=Path(env).expanduser()) if env else settings
