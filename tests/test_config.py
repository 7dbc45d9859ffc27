"""The settings object: defaults, the file, the environment, options, and one clear line per
bad value (unit level; tests/test_settings_cli.py drives the same through every command)."""

from __future__ import annotations

import datetime as dt
import os
import re
from pathlib import Path

import pytest

from scalefit.config import KEYS, Settings, load_settings
from scalefit.errors import ConfigError
from scalefit.schedule import check_cron, next_runs

ROOT = Path(__file__).resolve().parent.parent


def test_defaults_without_a_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    settings = load_settings(environ={})
    assert settings == Settings()
    assert settings.db == Path("scalefit.duckdb") and settings.reports == Path("reports")
    assert settings.log_folders == () and settings.fit_laws == ("chinchilla",)
    assert settings.storage_version == "v1.4.0" and settings.mirror is None
    assert settings.model_fields_set == set()  # nothing was set by anyone


def test_file_values_and_relative_paths(tmp_path: Path) -> None:
    path = tmp_path / "conf" / "scalefit.toml"
    path.parent.mkdir()
    path.write_text(
        """
[store]
db = "data/sf.duckdb"
storage_version = "v1.3.0"
[ingest]
folders = ["logs/a", "/abs/b"]
project = "sweep"
[fit]
laws = ["chinchilla", "kaplan-n"]
bootstrap = 50
resample = "points"
[upstream]
mirror = "mirror"
[schedule]
cron = "30 2 * * 1"
timezone = "Europe/Paris"
"""
    )
    s = load_settings(path, environ={})
    assert s.db == path.parent / "data" / "sf.duckdb"
    assert s.log_folders == (path.parent / "logs" / "a", Path("/abs/b"))
    assert s.project == "sweep" and s.fit_laws == ("chinchilla", "kaplan-n")
    assert s.bootstrap == 50 and s.resample == "points" and s.storage_version == "v1.3.0"
    assert s.cron == "30 2 * * 1" and s.timezone == "Europe/Paris"
    assert s.mirror == path.parent / "mirror"
    assert s.source == path
    assert s.with_overrides(db=Path("x.duckdb"), reports=None).db == Path("x.duckdb")
    with pytest.raises(ConfigError, match=r"argument: \[scale\] jobs = 0 is not valid"):
        s.with_overrides(jobs=0)


def test_precedence_option_env_file_default(tmp_path: Path) -> None:
    path = tmp_path / "scalefit.toml"
    path.write_text(
        '[store]\ndb = "file.duckdb"\n[scale]\njobs = 2\n[schedule]\ntimezone = "UTC"\n'
    )
    env = {"SCALEFIT_DB": "env.duckdb", "SCALEFIT_SCALE_JOBS": "3"}
    given = {"db": ("--db", Path("opt.duckdb"))}
    assert load_settings(path, options=given, environ=env).db == Path("opt.duckdb")
    assert load_settings(path, options={"db": ("--db", None)}, environ=env).db == Path("env.duckdb")
    assert load_settings(path, environ={}).db == tmp_path / "file.duckdb"
    assert load_settings(environ={}).db == Path("scalefit.duckdb")
    assert load_settings(path, environ=env).jobs == 3
    assert load_settings(path, environ={}).jobs == 2
    path.write_text('[fit]\npoints = "envelope"\n')
    points = {"fit_points": ("--points", "final")}
    assert load_settings(path, environ={}).fit_points == "envelope"
    env = {"SCALEFIT_FIT_POINTS": "checkpoints"}
    assert load_settings(path, environ=env).fit_points == "checkpoints"
    assert load_settings(path, options=points, environ=env).fit_points == "final"
    path.write_text("[scale]\njobs = 2\n")
    # A bad value in a layer that lost is never read: the option decides.
    bad_env = {"SCALEFIT_SCALE_JOBS": "many"}
    assert load_settings(path, options={"jobs": ("--jobs", 4)}, environ=bad_env).jobs == 4


def test_environment_values_are_parsed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    env = {
        "SCALEFIT_INGEST_FOLDERS": os.pathsep.join(["logs", "other"]),
        "SCALEFIT_FIT_LAWS": "chinchilla, kaplan-n",
        "SCALEFIT_OFFLINE": "yes",
        "SCALEFIT_FIT_BOOTSTRAP": "0",
        "SCALEFIT_UPSTREAM_MIRROR": "/srv/mirror",
        "SCALEFIT_STORAGE_VERSION": "latest",
        "SCALEFIT_REPORTS": "",  # empty: unset
    }
    s = load_settings(environ=env)
    assert s.log_folders == (Path("logs"), Path("other"))
    assert s.fit_laws == ("chinchilla", "kaplan-n") and s.offline is True and s.bootstrap == 0
    assert s.mirror == Path("/srv/mirror") and s.storage_version == "latest"
    assert s.reports == Path("reports")
    # SCALEFIT_CONFIG names the file when no path is given.
    (tmp_path / "other.toml").write_text("[fit]\nseed = 7\n")
    assert load_settings(environ={"SCALEFIT_CONFIG": str(tmp_path / "other.toml")}).seed == 7


def test_every_key_has_its_own_variable_and_is_in_the_readme() -> None:
    envs = [k.env for k in KEYS]
    assert len(set(envs)) == len(envs) and all(e.startswith("SCALEFIT_") for e in envs)
    assert {k.field for k in KEYS} == set(Settings.model_fields) - {"source"}
    # every field is a typed attribute of the class (what type checkers read)
    typed = set(Settings.__annotations__) - {"_fields_set", "model_fields"}
    assert typed == set(Settings.model_fields)
    readme = (ROOT / "docs" / "settings.md").read_text()  # the settings reference
    for key in KEYS:
        assert f"`{key.env}`" in readme, key.env
        assert f"`{key.section}.{key.key}`" in readme, key.name


def test_settings_are_a_frozen_value(tmp_path: Path) -> None:
    """Compared, hashed, copied and pickled by value; frozen; the fields a layer set (even
    to the default) are told from the defaulted ones; a bad value given directly is a
    ConfigError naming it as an argument's."""
    import copy
    import pickle

    path = tmp_path / "scalefit.toml"
    path.write_text('[ingest]\nproject = "default"\n[fit]\nwhere = "  params > 1e9 "\n')
    s = load_settings(path, environ={"SCALEFIT_SCALE_JOBS": "2"})
    assert s.model_fields_set == {"project", "fit_where", "jobs", "source"}
    assert s.project == "default" and s.jobs == 2 and s.source == path
    assert s != Settings() and s == load_settings(path, environ={"SCALEFIT_SCALE_JOBS": "2"})
    assert len({s, copy.copy(s), pickle.loads(pickle.dumps(s)), Settings()}) == 2
    assert pickle.loads(pickle.dumps(s)).model_fields_set == s.model_fields_set
    assert Settings(jobs=2).model_fields_set == {"jobs"} and Settings(jobs=2) != Settings()
    assert s.model_dump()["jobs"] == 2 and "source" not in s.model_dump()
    with pytest.raises(AttributeError, match="frozen"):
        s.jobs = 3  # type: ignore[misc]
    with pytest.raises(ConfigError, match=r"^argument: \[scale\] jobs = true is not valid"):
        Settings(jobs=True)
    with pytest.raises(ConfigError, match=r"^argument: \[fit\] laws = 'chinchilla' is not"):
        Settings(fit_laws="chinchilla")  # a string is not a tuple of names
    with pytest.raises(ConfigError, match="unknown setting 'job'"):
        s.with_overrides(job=2)


# Each bad value: its key, the value as written, and what is allowed, in one line.
BAD_FILES = [
    ('[ingest]\nfolders = "logs/"', "[ingest] folders = 'logs/' is not valid: allowed: a list"),
    ("[store]\ndb = 5", "[store] db = 5 is not valid: allowed: a path to a DuckDB file"),
    ('[store]\ndb = ""', "[store] db = '' is not valid"),
    ("[store]\nreports = true", "[store] reports = true is not valid: allowed: a folder path"),
    ("[ingest]\nfolders = [1, 2]", "[ingest] folders = [1, 2] is not valid"),
    ("[ingest]\nfolders = [[[['a']]]]", "[ingest] folders = [[[...]]] is not valid"),
    ("[ingest]\nfolders = " + "[" * 5000 + "]" * 5000, "cannot read it: nested too deeply"),
    ('[ingest]\nproject = ""', "[ingest] project = '' is not valid: allowed: a non-empty"),
    (
        '[schedule]\ntimezone = "Mars/Base"',
        "timezone = 'Mars/Base' is not valid: unknown time zone",
    ),
    (
        '[schedule]\ncron = "99 99 * * *"',
        "cron = '99 99 * * *' is not valid: Bad minute; allowed: a cron",
    ),
    ('[schedule]\ncron = "0 3 * *"', "must have 5 fields"),
    ("[schedule]\ncron = 3", "[schedule] cron = 3 is not valid"),
    (
        "[scale]\njobs = 1e9",
        "[scale] jobs = 1000000000.0 is not valid: allowed: a whole number from 1 to 1024",
    ),
    ("[scale]\njobs = 100000", "[scale] jobs = 100000 is not valid"),
    ("[scale]\njobs = true", "[scale] jobs = true is not valid: allowed: a whole number"),
    ("[scale]\njobs = 2.0", "[scale] jobs = 2.0 is not valid"),
    ("[scale]\nworkers = -1", "[scale] workers = -1 is not valid"),
    ("[fit]\nlaws = []", "[fit] laws = [] is not valid: allowed: one or more of chinchilla"),
    ("[fit]\nlaws = ['chinchila']", "unknown law 'chinchila'; allowed: one or more of chinchilla"),
    ("[fit]\nlaws = 'chinchilla'", "[fit] laws = 'chinchilla' is not valid"),
    ("[fit]\nbootstrap = 'many'", "[fit] bootstrap = 'many' is not valid: allowed: a whole number"),
    ("[fit]\nbootstrap = -1", "[fit] bootstrap = -1 is not valid"),
    ("[fit]\nseed = -1", "[fit] seed = -1 is not valid"),
    (
        "[fit]\nresample = 'models'",
        "[fit] resample = 'models' is not valid: allowed: one of points",
    ),
    (
        "[fit]\npoints = 'all'",
        "[fit] points = 'all' is not valid: unknown point mode; allowed: one of final, "
        "checkpoints, envelope",
    ),
    ("[fit]\npoints = 1", "[fit] points = 1 is not valid"),
    ("[fit]\nwhere = 3", "[fit] where = 3 is not valid: allowed: a predicate"),
    (
        "[fit]\nwhere = \"true)) r USING (run_id); COPY (select 42) TO 'x.csv'; SELECT 1 --\"",
        'refused: Parser Error: syntax error at or near ")"',
    ),
    ("[fit]\nwhere = 'no_such_column > 1'", "[fit] where = 'no_such_column > 1' is not valid"),
    ("[upstream]\noffline = 1", "[upstream] offline = 1 is not valid: allowed: true or false"),
    ("[upstream]\nmirror = 7", "[upstream] mirror = 7 is not valid"),
    (
        '[store]\nstorage_version = "1.4"',
        "storage_version = '1.4' is not valid: not a DuckDB version",
    ),
    ("[stor]\ndb = 'x'", "unknown section [stor]; allowed: store, ingest, fit"),
    (
        "[store]\ndbpath = 'x'",
        "unknown key `dbpath` in [store]; allowed: db, reports, storage_version",
    ),
    ("store = 3", "`store` must be a section [store] of keys, not 3"),
    ("[store\n", "cannot read it"),
]


@pytest.mark.parametrize(("text", "message"), BAD_FILES)
def test_bad_file_value_is_one_line_naming_it(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "scalefit.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=re.escape(message)) as info:
        load_settings(path, environ={})
    assert "\n" not in str(info.value) and str(info.value).startswith(str(path))


def test_every_bad_value_is_said_one_line_each(tmp_path: Path) -> None:
    """Not only the first: every unknown key and bad value of every layer, one line each
    naming its layer, in the order of the file's problems then the keys."""
    path = tmp_path / "scalefit.toml"
    path.write_text(
        '[store]\ndb = 5\ndbpath = "x"\n[fit]\nbootstrap = -1\nlaws = ["chinchila"]\n'
        "[stor]\nx = 1\n[scale]\njobs = 2\n"
    )
    with pytest.raises(ConfigError) as info:
        load_settings(
            path,
            environ={"SCALEFIT_OFFLINE": "maybe"},
            options={"seed": ("--seed", -1), "workers": ("--workers", 2)},
        )
    assert str(info.value).splitlines() == [
        f"{path}: unknown key `dbpath` in [store]; allowed: db, reports, storage_version",
        f"{path}: unknown section [stor]; allowed: store, ingest, fit, scale, upstream, schedule",
        f"{path}: [store] db = 5 is not valid: allowed: a path to a DuckDB file",
        f"{path}: [fit] laws = ['chinchila'] is not valid: unknown law 'chinchila'; allowed: "
        "one or more of chinchilla, kaplan-n, kaplan-d, kaplan-c, kaplan-nd, isoflop, envelope, "
        "data-constrained, overtraining, downstream-error",
        f"{path}: [fit] bootstrap = -1 is not valid: allowed: a whole number from 0 to 1_000_000",
        "option --seed: [fit] seed = -1 is not valid: allowed: a whole number >= 0",
        "environment variable SCALEFIT_OFFLINE: [upstream] offline = 'maybe' is not valid: "
        "allowed: true or false",
    ]
    with pytest.raises(ConfigError) as info:
        Settings(jobs=True, seed=-1)  # as arguments, both too
    assert [line.split(" = ")[0] for line in str(info.value).splitlines()] == [
        "argument: [fit] seed",
        "argument: [scale] jobs",
    ]


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"SCALEFIT_SCALE_JOBS": "many"}, "environment variable SCALEFIT_SCALE_JOBS: [scale] jobs"),
        ({"SCALEFIT_SCALE_JOBS": "1e9"}, "[scale] jobs = '1e9' is not valid"),
        ({"SCALEFIT_OFFLINE": "maybe"}, "[upstream] offline = 'maybe' is not valid"),
        ({"SCALEFIT_TIMEZONE": "Mars/Base"}, "SCALEFIT_TIMEZONE: [schedule] timezone"),
        ({"SCALEFIT_FIT_LAWS": "chinchilla,nope"}, "unknown law 'nope'"),
        ({"SCALEFIT_DB": "."}, "SCALEFIT_DB: [store] db = '.' is not valid"),
        ({"SCALEFIT_FIT_POINTS": "last"}, "SCALEFIT_FIT_POINTS: [fit] points = 'last' is not"),
    ],
)
def test_bad_environment_value_names_the_variable(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_settings(environ=env)


def test_dask_combinations(tmp_path: Path) -> None:
    path = tmp_path / "scalefit.toml"
    path.write_text('[scale]\ndask_address = "tcp://127.0.0.1:1"\n')
    with pytest.raises(ConfigError, match=re.escape('needs [scale] task_runner = "dask"')):
        load_settings(path, environ={})


def test_missing_explicit_config_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no config file"):
        load_settings(tmp_path / "nope.toml", environ={})


def test_next_runs_by_hand() -> None:
    start = dt.datetime(2026, 3, 31, 23, 59, 30, tzinfo=dt.UTC)
    assert next_runs("0 3 * * *", after=start, count=2) == [
        dt.datetime(2026, 4, 1, 3, 0, tzinfo=dt.UTC),
        dt.datetime(2026, 4, 2, 3, 0, tzinfo=dt.UTC),
    ]
    # Six fields: seconds first.
    assert next_runs("*/20 * * * * *", after=start) == [
        dt.datetime(2026, 3, 31, 23, 59, 40, tzinfo=dt.UTC)
    ]
    paris = next_runs("0 3 * * *", after=start, timezone="Europe/Paris")[0]
    assert paris.utcoffset() == dt.timedelta(hours=2)  # summer time in April
    assert paris.astimezone(dt.UTC).hour == 1


@pytest.mark.parametrize(
    ("cron", "tz", "message"),
    [
        ("0 3 * *", "UTC", "5 fields"),
        ("0 25 * * *", "UTC", "not valid"),
        ("0 3 * * *", "Mars/Olympus", "unknown time zone"),
    ],
)
def test_bad_schedules(cron: str, tz: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        check_cron(cron, tz)
