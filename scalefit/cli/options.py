"""Every option of the ``scalefit`` commands, defined once; each command imports what it takes.

An option that is a setting defaults to None ("not given"): the value then comes from the
environment, scalefit.toml or the built-in default (:func:`scalefit.config.load_settings`), and
``show_default`` says what that built-in default is. Typer must not read the variable itself,
so that the settings object is the one place that does.

To add an option: define it here (its help says where else the setting can come from, with
:func:`setting_help`), give it to the commands that take it, and extend
``tests/test_settings_cli.py`` when it is a setting.
"""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from .._names import LAW_NAMES, METRIC_PREFERENCE, POINT_MODES  # not scalefit.fit (slow)
from ..schemas.vocabulary import LOG_FORMATS, SCHEDULES


def setting_help(text: str, env: str, key: str) -> str:
    """An option's help that also says where else its setting can come from."""
    return f"{text} Else ${env}, else scalefit.toml {key}."


class OutputFormat(StrEnum):
    """What ``--format`` prints: a rich table, CSV, or strict JSON."""

    table = "table"
    csv = "csv"
    json = "json"


LogFormat = StrEnum("LogFormat", {f: f for f in LOG_FORMATS})  # type: ignore[misc]
"""The log formats ``scalefit ingest --format`` can force: the vocabulary's."""

Schedule = StrEnum("Schedule", {s: s for s in SCHEDULES})  # type: ignore[misc]
"""The choices of ``ingest --schedule``: the vocabulary's learning-rate schedules."""


# ----------------------------------------------------------------------- store and settings

DbOption = Annotated[
    Path | None,
    typer.Option(
        "--db",
        help=setting_help("DuckDB file.", "SCALEFIT_DB", "store.db"),
        show_default="scalefit.duckdb",
    ),
]

PlanDbOption = Annotated[
    Path | None,
    typer.Option(
        "--db",
        help=setting_help(
            "DuckDB file (when it does not exist: the curated laws).", "SCALEFIT_DB", "store.db"
        ),
        show_default="scalefit.duckdb",
    ),
]

ConfigOption = Annotated[
    Path | None,
    typer.Option(
        "--config",
        help="Settings file.",
        envvar="SCALEFIT_CONFIG",
        show_default="./scalefit.toml if present, else built-in defaults",
    ),
]


def _reports_option(flag: str) -> typer.models.OptionInfo:
    return typer.Option(
        flag,
        help=setting_help(
            "Folder for the Parquet reports and plots.", "SCALEFIT_REPORTS", "store.reports"
        ),
        show_default="reports",
    )


ReportsOption = Annotated[Path | None, _reports_option("--reports")]
OutOption = Annotated[Path | None, _reports_option("--out")]

# ----------------------------------------------------------------------------------- output

JsonOption = Annotated[
    bool, typer.Option("--json", help="Print one JSON object.", show_default="off")
]
JsonArrayOption = Annotated[bool, typer.Option("--json", help="Print a JSON array.")]
ReproduceJsonOption = Annotated[
    bool, typer.Option("--json", help='Print one object: {"study", "claims": [...]}.')
]
SqlFormatOption = Annotated[
    OutputFormat,
    typer.Option("--format", "-f", help="table, csv, or json (one array of row objects)."),
]
FormatOption = Annotated[OutputFormat, typer.Option("--format", "-f", help="table, csv, or json.")]

# ---------------------------------------------------------------------------------- refresh

LogsOption = Annotated[
    list[Path] | None,
    typer.Option(
        "--logs",
        help=setting_help(
            "A log folder to ingest (repeatable; replaces the settings' folders).",
            "SCALEFIT_INGEST_FOLDERS",
            "ingest.folders",
        ),
        show_default="none",
    ),
]
OfflineOption = Annotated[
    bool | None,
    typer.Option(
        "--offline/--online",
        help=setting_help(
            "Download nothing; use cached upstream files.", "SCALEFIT_OFFLINE", "upstream.offline"
        ),
        show_default="--online",
    ),
]
CronOption = Annotated[
    str | None,
    typer.Option(
        "--cron",
        help=setting_help('Schedule, e.g. "30 2 * * 1".', "SCALEFIT_CRON", "schedule.cron"),
        show_default="0 3 * * *",
    ),
]
TimezoneOption = Annotated[
    str | None,
    typer.Option(
        "--timezone",
        help=setting_help("Time zone of the schedule.", "SCALEFIT_TIMEZONE", "schedule.timezone"),
        show_default="UTC",
    ),
]
MaxRunsOption = Annotated[
    int | None,
    typer.Option(
        "--max-runs", help="Stop after this many runs.", min=1, show_default="until stopped"
    ),
]

# ---------------------------------------------------------------------------------- queries

QueryArgument = Annotated[
    str, typer.Argument(help='A SQL query, e.g. "select * from comparisons".')
]
FamilyOption = Annotated[
    str | None,
    typer.Option("--family", help='Only this family, e.g. "Llama 3.1".', show_default="all"),
]
StudyArgument = Annotated[str, typer.Argument(help="Study name (see `scalefit studies list`).")]

# -------------------------------------------------------------------------------------- fit

InputOption = Annotated[
    Path | None,
    typer.Option(
        "--input",
        "-i",
        help="CSV or Parquet: params, tokens, loss (optional flops, run_id).",
        show_default="none: read runs from the store",
    ),
]
LawFormOption = Annotated[str, typer.Option("--law", help=f"Law form: {', '.join(LAW_NAMES)}.")]
WhereOption = Annotated[
    str | None,
    typer.Option(
        "--where",
        help=setting_help(
            "Without --input: predicate on `runs` (e.g. \"project = 'x'\").",
            "SCALEFIT_FIT_WHERE",
            "fit.where",
        ),
        show_default="all runs",
    ),
]
MetricOption = Annotated[
    str | None,
    typer.Option(
        "--metric",
        help="Use this metric of the store's observations for every run.",
        show_default="per run, the first of " + ", ".join(METRIC_PREFERENCE),
    ),
]
PointsOption = Annotated[
    str | None,
    typer.Option(
        "--points",
        help=setting_help(
            "Which observations of each run: " + ", ".join(POINT_MODES) + ".",
            "SCALEFIT_FIT_POINTS",
            "fit.points",
        ),
        show_default="final",
    ),
]
WarmupOption = Annotated[
    float,
    typer.Option(
        "--warmup",
        min=0.0,
        max=0.99,
        help="With --points checkpoints or envelope: leave out each run's checkpoints "
        "before this fraction of its tokens.",
    ),
]
BootstrapOption = Annotated[int, typer.Option("--bootstrap", help="Bootstrap resamples.")]
ReproduceBootstrapOption = Annotated[
    int, typer.Option("--bootstrap", min=0, help="Bootstrap resamples (beyond the paper).")
]
SeedSettingOption = Annotated[
    int | None,
    typer.Option(
        "--seed",
        help=setting_help("Bootstrap seed.", "SCALEFIT_FIT_SEED", "fit.seed"),
        show_default="0",
    ),
]
SeedOption = Annotated[int, typer.Option("--seed", help="Bootstrap seed.")]
DeltaOption = Annotated[float, typer.Option("--huber-delta", help="Huber delta.")]
ResampleOption = Annotated[
    str | None,
    typer.Option(
        "--resample",
        help="Bootstrap unit: points, runs or params.",
        show_default="runs with --points checkpoints or envelope, else points",
    ),
]
IrreducibleOption = Annotated[
    bool, typer.Option("--irreducible/--no-irreducible", help="Kaplan forms: add a term E.")
]
SaveOption = Annotated[
    bool | None,
    typer.Option(
        "--save/--no-save",
        help="Save to `fits`/`laws`.",
        show_default="--save when fit from the store, else --no-save",
    ),
]
ExtrapolateOption = Annotated[
    int,
    typer.Option(
        "--extrapolate",
        min=0,
        help="Also refit without the K largest compute budgets and score the law's "
        "predictions there (0: off).",
        metavar="K",
    ),
]
JobsOption = Annotated[
    int | None,
    typer.Option(
        "--jobs",
        "-j",
        min=1,
        help=setting_help(
            "Processes for the bootstrap refits (same result).",
            "SCALEFIT_SCALE_JOBS",
            "scale.jobs",
        ),
        show_default="1",
    ),
]

# ------------------------------------------------------------------------------------- plan

FlopsOption = Annotated[float, typer.Option("--flops", help="Training compute budget (FLOPs).")]
LawIdOption = Annotated[
    str, typer.Option("--law", help="Law id in the store (published or fitted).")
]
UniqueTokensOption = Annotated[
    float | None,
    typer.Option(
        "--unique-tokens", help="Unique training tokens available.", show_default="unlimited"
    ),
]
InferenceTokensOption = Annotated[
    float | None,
    typer.Option(
        "--inference-tokens",
        help="Lifetime inference tokens expected.",
        show_default="none: no inference-aware plan",
    ),
]
TargetLossOption = Annotated[
    float | None,
    typer.Option(
        "--target-loss",
        help="Loss the inference-aware model must reach.",
        show_default="the compute-optimal one's",
    ),
]

# ----------------------------------------------------------------------------------- ingest

PathsArgument = Annotated[
    list[Path],
    typer.Argument(help="Log files or folders (folders are walked for recognised logs)."),
]
ProjectOption = Annotated[
    str | None,
    typer.Option(
        help=setting_help(
            "Project of runs whose file and run.json do not name one.",
            "SCALEFIT_PROJECT",
            "ingest.project",
        ),
        show_default="default",
    ),
]
ParamsOption = Annotated[
    str | None,
    typer.Option(
        help="Parameter count of runs whose file and run.json do not give one (e.g. 125M, 1.3e9).",
        show_default="from n_layer and d_model in run.json",
    ),
]
TokensPerStepOption = Annotated[
    str | None,
    typer.Option(
        "--tokens-per-step",
        help="Tokens per optimizer step (batch size x sequence length), so that "
        "tokens = step x this, for runs that do not log `tokens` (preferred to HF's "
        "num_input_tokens_seen, which counts padding).",
        show_default="none",
    ),
]
ScheduleOption = Annotated[
    Schedule | None,
    typer.Option(
        "--schedule",
        help="Learning-rate schedule of runs whose file and run.json do not declare one "
        "(constant, wsd, cosine): intermediate checkpoints of a cosine run are biased "
        "estimates of a shorter run's final loss.",
        show_default="unknown",
    ),
]
LogFormatOption = Annotated[
    LogFormat | None,
    typer.Option(
        "--format", help="Force the format instead of detecting it.", show_default="detect"
    ),
]
