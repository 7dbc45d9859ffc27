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
    DEFAULT_DB_PATH,
    DbOption,
    console,
    handle_errors,
    human_count,
    prepare_prefect_environment,
    print_error,
    print_frame,
    print_warning,
)


class OutputFormat(StrEnum):
    table = "table"
    csv = "csv"
    json = "json"


ReportsOption = Annotated[
    Path,
    typer.Option("--reports", help="Folder for the Parquet reports.", envvar="SCALEFIT_REPORTS"),
]


ConfigOption = Annotated[
    Path | None,
    typer.Option(
        "--config",
        help="Config file (default: ./scalefit.toml if present, else built-in defaults).",
        envvar="SCALEFIT_CONFIG",
    ),
]


@app.command()
@handle_errors
def refresh(
    db: Annotated[
        Path | None, typer.Option("--db", help="DuckDB file [default: ./scalefit.duckdb].")
    ] = None,
    reports: Annotated[
        Path | None, typer.Option("--reports", help="Reports folder [default: ./reports].")
    ] = None,
    config: ConfigOption = None,
    logs: Annotated[
        list[Path] | None,
        typer.Option("--logs", help="A log folder to ingest (repeatable; replaces the config's)."),
    ] = None,
    offline: Annotated[
        bool, typer.Option("--offline", help="Download nothing; use cached upstream files.")
    ] = False,
) -> None:
    """Load the curated datasets and log folders, compare every model with every law, and
    write the reports.

    Runs the Prefect `refresh` flow in Prefect's ephemeral mode: no server to start, no
    account, nothing leaves this machine. Safe to re-run: unchanged inputs change nothing.
    Settings come from scalefit.toml (see README); options here override them. Exit status 1
    when a step failed (the other steps' work is kept).
    """
    from rich.table import Table

    from ..config import load_settings

    load_settings(config)  # fail fast on a bad config, before Prefect starts
    prepare_prefect_environment()
    started = time.monotonic()
    with console.status("Starting Prefect (ephemeral mode) and running the refresh flow…"):
        from ..flows.refresh import refresh as refresh_flow

        info = refresh_flow(
            config_path=config,
            db_path=db,
            reports_dir=reports,
            log_folders=logs,
            offline=offline or None,
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
    for step, message in info.errors.items():
        print_error(f"{step}: {message}")
    if info.errors:
        raise typer.Exit(1)


@app.command()
@handle_errors
def report(
    db: DbOption = DEFAULT_DB_PATH,
    out: Annotated[Path, typer.Option("--out", help="Folder for the reports.")] = Path("reports"),
) -> None:
    """Write the Parquet reports and plots from the store, without refitting or reloading."""
    from .. import store
    from ..report import write_reports

    with store.connect(db, create=False) as con:
        info = write_reports(con, out)
    for name, size in info.files.items():
        unit = "bytes" if name.endswith(".png") else "rows"
        console.print(f"{out / name}  ({size} {unit})", highlight=False, markup=False)


@app.command()
@handle_errors
def serve(
    cron: Annotated[
        str | None,
        typer.Option("--cron", help='Schedule, e.g. "0 3 * * *" [default: the config\'s].'),
    ] = None,
    timezone: Annotated[
        str | None, typer.Option("--timezone", help="Time zone of the schedule.")
    ] = None,
    config: ConfigOption = None,
    max_runs: Annotated[
        int | None, typer.Option("--max-runs", help="Stop after this many runs.", min=1)
    ] = None,
) -> None:
    """Run the refresh flow on a cron schedule until interrupted (Ctrl-C).

    With a Prefect server configured (PREFECT_API_URL), the flow is served as the deployment
    `refresh/scalefit-refresh` and Prefect's scheduler triggers it (visible in the UI).
    Without one, the schedule is kept by this process and each run is a Prefect flow run in
    ephemeral mode.
    """
    from ..config import load_settings
    from ..errors import ConfigError
    from ..schedule import check_cron

    settings = load_settings(config)
    cron = cron or settings.cron
    timezone = timezone or settings.timezone
    check_cron(cron, timezone)
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
    db: DbOption = DEFAULT_DB_PATH,
    format: Annotated[
        OutputFormat,
        typer.Option("--format", "-f", help="table, csv, or json (one array of row objects)."),
    ] = OutputFormat.table,
) -> None:
    """Run a SQL query against the store (read-only) and print the result.

    Tables: sources, models, runs, observations, laws, law_parameters, fits, ingests,
    quarantine, optimal_allocations, and the view comparisons.
    """
    from .. import store

    with store.connect(db, read_only=True) as con:
        frame = store.query(con, query)
    print_frame(frame, format.value)


@app.command()
@handle_errors
def models(
    family: Annotated[
        str | None, typer.Option("--family", help='Only this family, e.g. "Llama 3.1".')
    ] = None,
    format: Annotated[
        OutputFormat, typer.Option("--format", "-f", help="table, csv, or json.")
    ] = OutputFormat.table,
) -> None:
    """List the curated published models (read from the shipped datasets; no database needed)."""
    import polars as pl

    from .. import curated
    from ..errors import ConfigError

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
