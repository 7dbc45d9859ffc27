"""``scalefit refresh``, ``scalefit sql`` and ``scalefit models``."""

from __future__ import annotations

import time
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

# Heavy modules (polars, duckdb, pandera, matplotlib, Prefect) are imported inside the
# commands that need them, so `scalefit fit` or `--help` does not pay for the others.
from . import app
from ._common import (
    ConfigOption,
    DbOption,
    console,
    handle_errors,
    human_count,
    prepare_prefect_environment,
    print_error,
    print_frame,
    print_warning,
    read_settings,
    setting_help,
)


class OutputFormat(StrEnum):
    table = "table"
    csv = "csv"
    json = "json"


def _reports_option(*flags: str) -> typer.models.OptionInfo:
    return typer.Option(
        *flags,
        help=setting_help(
            "Folder for the Parquet reports and plots.", "SCALEFIT_REPORTS", "store.reports"
        ),
        show_default="reports",
    )


@app.command()
@handle_errors
def refresh(
    db: DbOption = None,
    reports: Annotated[Path | None, _reports_option("--reports")] = None,
    config: ConfigOption = None,
    logs: Annotated[
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
    ] = None,
    offline: Annotated[
        bool | None,
        typer.Option(
            "--offline/--online",
            help=setting_help(
                "Download nothing; use cached upstream files.",
                "SCALEFIT_OFFLINE",
                "upstream.offline",
            ),
            show_default="--online",
        ),
    ] = None,
) -> None:
    """Load the curated datasets and log folders, compare every model with every law, and
    write the reports.

    Runs the Prefect `refresh` flow in Prefect's ephemeral mode: no server to start, no
    account, nothing leaves this machine. Safe to re-run: unchanged inputs change nothing.
    Settings: options > SCALEFIT_* variables > scalefit.toml > defaults (see README). Exit
    status 1 when a step failed (the other steps' work is kept).
    """
    from rich.table import Table

    # Every setting is checked here, before Prefect starts; the flow reads the same layers.
    settings = read_settings(
        config,
        db=("--db", db),
        reports=("--reports", reports),
        log_folders=("--logs", logs),
        offline=("--offline", offline),
    )
    prepare_prefect_environment()
    started = time.monotonic()
    with console.status("Starting Prefect (ephemeral mode) and running the refresh flow…"):
        from ..flows.refresh import refresh as refresh_flow

        info = refresh_flow(
            config_path=config,
            db_path=settings.db,
            reports_dir=settings.reports,
            log_folders=list(settings.log_folders),
            offline=settings.offline,
        )
    table = Table(title=f"scalefit refresh: {info.db_path}", title_justify="left")
    table.add_column("table")
    table.add_column("rows", justify="right")
    table.add_column("change", justify="right")
    for name, rows in info.counts_after.items():
        delta = info.changes.get(name, 0)
        table.add_row(name, str(rows), f"{delta:+d}" if delta else "")
    console.print(table)
    loaded = info.steps["load_curated"]
    console.print(
        f"curated datasets: {'loaded' if loaded.changed else 'unchanged'} "
        f"(sha256 {loaded.sha256[:12]}); log folders: {len(info.steps['ingest'])}; "
        f"comparisons: {info.steps['comparisons']} rows; "
        f"reports in {info.reports_dir}/ ({', '.join(info.steps['reports'].files)}); "
        f"{time.monotonic() - started:.1f} s",
        markup=False,
    )
    for result in info.steps["upstreams"]:
        if result.status == "warning":
            print_warning(f"upstream {result.upstream}: {result.message}")
    for result in info.steps.get("studies", []):
        if result.status == "warning":
            print_warning(f"study {result.study}: {result.message}")
    reproductions = info.steps.get("reproductions")
    if reproductions is not None and reproductions.reproductions is not None:
        from .studies import print_reproduction_tables

        print_reproduction_tables(reproductions.reproductions)
    for step, message in info.errors.items():
        print_error(f"{step}: {message}")
    if info.errors:
        raise typer.Exit(1)


@app.command()
@handle_errors
def report(
    db: DbOption = None,
    out: Annotated[Path | None, _reports_option("--out")] = None,
    config: ConfigOption = None,
) -> None:
    """Write the Parquet reports and plots from the store, without refitting or reloading.

    The comparisons report is recomputed from the store's models and laws (cheap), so it holds
    every law saved since the last refresh (e.g. by `scalefit fit --save`) and agrees with the
    frontier; the store itself is only read.
    """
    from .. import store, user_sql
    from ..report import write_reports

    settings = read_settings(config, db=("--db", db), reports=("--out", out))
    db, out = settings.db, settings.reports
    with store.connect(db, create=False):
        pass  # brings an older store's tables up to date
    with user_sql.connect_locked(db) as con:
        info = write_reports(con, out)
    for name, size in info.files.items():
        unit = "bytes" if name.endswith(".png") else "rows"
        console.print(f"{out / name}  ({size} {unit})", highlight=False, markup=False)
    for law_id, reason in info.not_compared.items():
        console.print(
            f"not in comparisons: {law_id}: {reason.split('. ')[0]} (laws.parquet)",
            highlight=False,
            markup=False,
        )


@app.command()
@handle_errors
def serve(
    cron: Annotated[
        str | None,
        typer.Option(
            "--cron",
            help=setting_help('Schedule, e.g. "30 2 * * 1".', "SCALEFIT_CRON", "schedule.cron"),
            show_default="0 3 * * *",
        ),
    ] = None,
    timezone: Annotated[
        str | None,
        typer.Option(
            "--timezone",
            help=setting_help(
                "Time zone of the schedule.", "SCALEFIT_TIMEZONE", "schedule.timezone"
            ),
            show_default="UTC",
        ),
    ] = None,
    config: ConfigOption = None,
    max_runs: Annotated[
        int | None,
        typer.Option(
            "--max-runs", help="Stop after this many runs.", min=1, show_default="until stopped"
        ),
    ] = None,
) -> None:
    """Run the refresh flow on a cron schedule until interrupted (Ctrl-C).

    With a Prefect server configured (PREFECT_API_URL), the flow is served as the deployment
    `refresh/scalefit-serve` with the schedule in --timezone, and Prefect's scheduler triggers
    it (visible in the UI).
    Without one, the schedule is kept by this process and each run is a Prefect flow run in
    ephemeral mode.
    """
    from ..errors import ConfigError

    settings = read_settings(config, cron=("--cron", cron), timezone=("--timezone", timezone))
    cron, timezone = settings.cron, settings.timezone
    prepare_prefect_environment()
    from ..flows import serve as serving

    if serving.has_prefect_server():
        if max_runs is not None:
            raise ConfigError("--max-runs applies only without a Prefect server")
        console.print(
            f'Serving refresh/{serving.DEPLOYMENT_NAME} on "{cron}" ({timezone}).', markup=False
        )
        serving.serve_with_server(cron, timezone, config)
        return
    console.print(
        f'No Prefect server configured: keeping the schedule "{cron}" ({timezone}) here.',
        markup=False,
    )
    serving.serve_locally(
        cron,
        timezone,
        config,
        max_runs=max_runs,
        on_schedule=lambda when: console.print(f"next refresh at {when.isoformat()}"),
        on_run=lambda info: console.print(
            info.summary() if info else "refresh failed (see log)", markup=False
        ),
    )


@app.command()
@handle_errors
def sql(
    query: Annotated[str, typer.Argument(help='A SQL query, e.g. "select * from comparisons".')],
    db: DbOption = None,
    format: Annotated[
        OutputFormat,
        typer.Option("--format", "-f", help="table, csv, or json (one array of row objects)."),
    ] = OutputFormat.table,
    config: ConfigOption = None,
) -> None:
    """Run one read-only SQL query against the store and print the result.

    Tables: sources, models, runs, observations, laws, law_parameters, fits, fit_points,
    ingests, quarantine, optimal_allocations, and the view comparisons. The query runs on a
    locked read-only connection: it cannot write, read other files, reach the network, load
    extensions or change settings; anything else is refused with the reason (see README).
    """
    from .. import user_sql

    db = read_settings(config, db=("--db", db)).db
    with user_sql.connect_locked(db) as con:
        result = user_sql.user_query(con, query)
    print_frame(
        result.frame,
        format.value,
        json_columns=result.json_columns,
        integer_columns=result.integer_columns,
    )


@app.command()
@handle_errors
def models(
    family: Annotated[
        str | None,
        typer.Option("--family", help='Only this family, e.g. "Llama 3.1".', show_default="all"),
    ] = None,
    format: Annotated[
        OutputFormat, typer.Option("--format", "-f", help="table, csv, or json.")
    ] = OutputFormat.table,
) -> None:
    """List the curated published models (read from the shipped datasets; no database needed)."""
    import polars as pl

    from ..errors import ConfigError
    from ..load import curated

    data = curated.read_curated()
    frame = data.models
    if family:
        known = sorted(frame["family"].unique().to_list())
        frame = frame.filter(pl.col("family").str.to_lowercase() == family.lower())
        if frame.height == 0:
            raise ConfigError(
                f"no family {family!r} in the curated models; families: {', '.join(known)}"
            )
    frame = frame.select(
        "family",
        "model",
        pl.col("architecture").alias("arch"),
        "params",
        "active_params",
        "tokens",
        (pl.col("tokens") / pl.col("params")).round(1).alias("tokens_per_param"),
        "training_flops",
        pl.when(pl.col("flops_is_estimate"))
        .then(pl.lit("6ND"))
        .otherwise(pl.lit("published"))
        .alias("flops_from"),
        "source_id",
    )
    if format == OutputFormat.table:
        counts = ("params", "active_params", "tokens")
        frame = frame.with_columns(
            pl.col(c).map_elements(human_count, return_dtype=pl.String) for c in counts
        )
    print_frame(frame, format.value, title="Published models (datasets/)")
