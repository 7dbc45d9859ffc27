"""``scalefit refresh``, ``report``, ``serve``, ``sql`` and ``models``."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import typer

# Heavy modules (polars, duckdb, pandera, matplotlib, Prefect) are imported inside the
# commands that need them, so `scalefit fit` or `--help` does not pay for the others.
from ._common import (
    console,
    handle_errors,
    human_count,
    print_error,
    print_frame,
    print_warning,
    read_settings,
)
from .options import (
    ConfigOption,
    CronOption,
    DbOption,
    FamilyOption,
    FormatOption,
    LogsOption,
    MaxRunsOption,
    OfflineOption,
    OutOption,
    OutputFormat,
    QueryArgument,
    ReportsOption,
    SqlFormatOption,
    TimezoneOption,
)

if TYPE_CHECKING:
    from ..pipeline import RefreshInfo


def register(app: typer.Typer) -> None:
    """Register this module's commands on ``app``."""
    for command in (refresh, report, serve, sql, models):
        app.command()(command)


@handle_errors
def refresh(
    db: DbOption = None,
    reports: ReportsOption = None,
    config: ConfigOption = None,
    logs: LogsOption = None,
    offline: OfflineOption = None,
) -> None:
    """Load the curated datasets and log folders, compare every model with every law, and
    write the reports.

    Runs the Prefect `refresh` flow in Prefect's ephemeral mode: no server to start, no
    account, nothing leaves this machine. Safe to re-run: unchanged inputs change nothing.
    Settings: options > SCALEFIT_* variables > scalefit.toml > defaults (see README). Exit
    status 1 when a step failed (the other steps' work is kept).
    """
    # Every setting is checked here, before Prefect starts; the flow reads the same layers.
    settings = read_settings(
        config,
        db=("--db", db),
        reports=("--reports", reports),
        log_folders=("--logs", logs),
        offline=("--offline", offline),
    )
    started = time.monotonic()
    with console.status("Starting Prefect (ephemeral mode) and running the refresh flow…"):
        from ..flows._env import start_ephemeral_server

        # Prefect's temporary server starts while the flow and its libraries are imported.
        server = start_ephemeral_server()
        from ..flows.refresh import refresh as refresh_flow

        server.wait()
        info = refresh_flow(
            config_path=config,
            db_path=settings.db,
            reports_dir=settings.reports,
            log_folders=list(settings.log_folders),
            offline=settings.offline,
        )
    print_refresh(info, time.monotonic() - started)
    if info.errors:
        raise typer.Exit(1)


def print_refresh(info: RefreshInfo, seconds: float) -> None:
    """What ``scalefit refresh`` prints: the table counts, one line per step, the warnings,
    the reproduction tables, and one ``error:`` line per failed step."""
    from rich.table import Table

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
        f"{seconds:.1f} s",
        markup=False,
    )
    for upstream in info.steps["upstreams"]:
        if upstream.status == "warning":
            print_warning(f"upstream {upstream.upstream}: {upstream.message}")
    for study in info.steps.get("studies", []):
        if study.status == "warning":
            print_warning(f"study {study.study}: {study.message}")
    reproductions = info.steps.get("reproductions")
    if reproductions is not None and reproductions.reproductions is not None:
        from .studies import print_reproduction_tables

        print_reproduction_tables(reproductions.reproductions)
    for step, message in info.errors.items():
        print_error(f"{step}: {message}")


@handle_errors
def report(db: DbOption = None, out: OutOption = None, config: ConfigOption = None) -> None:
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


@handle_errors
def serve(
    cron: CronOption = None,
    timezone: TimezoneOption = None,
    config: ConfigOption = None,
    max_runs: MaxRunsOption = None,
) -> None:
    """Run the refresh flow on a cron schedule until interrupted (Ctrl-C).

    With a Prefect server configured (PREFECT_API_URL), the flow is served as the deployment
    `refresh/scalefit-serve` with the schedule in --timezone, and Prefect's scheduler triggers
    it (visible in the UI).
    Without one, the schedule is kept by this process and each run is a Prefect flow run in
    ephemeral mode.
    """
    from ..errors import ConfigError
    from ..flows._env import has_prefect_server, prepare_prefect_environment

    settings = read_settings(config, cron=("--cron", cron), timezone=("--timezone", timezone))
    cron, timezone = settings.cron, settings.timezone
    prepare_prefect_environment()
    with_server = has_prefect_server()
    if with_server and max_runs is not None:
        raise ConfigError("--max-runs applies only without a Prefect server")
    from ..flows import serve as serving

    if with_server:
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


@handle_errors
def sql(
    query: QueryArgument,
    db: DbOption = None,
    format: SqlFormatOption = OutputFormat.table,
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


@handle_errors
def models(family: FamilyOption = None, format: FormatOption = OutputFormat.table) -> None:
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
