"""``scalefit ingest``: users' training logs into ``runs`` and ``observations``."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer

from .._counts import parse_count as _parse_count
from ._common import console, err_console, handle_errors, read_settings
from .options import (
    ConfigOption,
    DbOption,
    LogFormatOption,
    ParamsOption,
    PathsArgument,
    ProjectOption,
    ScheduleOption,
    TokensPerStepOption,
)

if TYPE_CHECKING:
    from ..load import logs as _ingest

# scalefit.load (pandera, the store) and rich.progress are imported by the command that
# uses them: `import scalefit.cli` runs for every command, `scalefit fit` included.


def register(app: typer.Typer) -> None:
    """Register ``scalefit ingest`` on ``app``."""
    app.command(help=_HELP, epilog=_EPILOG)(ingest)


def parse_count(text: str | None) -> float | None:
    """A count such as ``125000000``, ``1.25e8``, ``125M`` or ``1.3B`` (the parser the
    ingest uses for counts in files: :func:`scalefit._counts.parse_count`)."""
    if text is None:
        return None
    try:
        return _parse_count(text)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None


_EPILOG = (
    "Exit status: 0 every file ingested or unchanged; 1 a file failed to parse (see its "
    "message; the other files were still ingested) or the database stayed busy; 2 rows were "
    'rejected to the `quarantine` table (see `scalefit sql "select * from quarantine"`).'
)


_HELP = (
    "Ingest your training logs (loss curves) so they can be fitted beside published models."
    "\n\n"
    "Formats, detected from the name and first line: long tables in CSV, JSONL or Parquet "
    "(run_id, step, tokens, flops, loss columns such as loss, train_loss, eval_loss, and "
    "optional params, project, unique_tokens, tokens_per_step, schedule); Hugging Face "
    "trainer_state.json; W&B CSV exports (run history, or chart export). Run metadata may "
    "sit in run.json or run.yaml beside the logs; --project, --params, --tokens-per-step and "
    "--schedule fill in what the files do not say."
    "\n\n"
    "Unchanged files are skipped, grown logs add only their new rows, a changed file "
    "replaces its rows; every file is one transaction. Rejected rows go to the quarantine "
    "table with the reason."
)


@handle_errors
def ingest(
    paths: PathsArgument,
    project: ProjectOption = None,
    params: ParamsOption = None,
    tokens_per_step: TokensPerStepOption = None,
    schedule: ScheduleOption = None,
    format: LogFormatOption = None,
    db: DbOption = None,
    config: ConfigOption = None,
) -> None:
    """Ingest training logs (see ``_HELP``)."""
    from .. import store

    settings = read_settings(config, db=("--db", db), project=("--project", project))
    db = settings.db
    # Only a project someone set: without one, a re-ingested run keeps the project it has.
    project = settings.project if "project" in settings.model_fields_set else None
    store.use_storage_version(settings.storage_version)
    count_params = parse_count(params)
    count_tps = parse_count(tokens_per_step)
    report = ingest_with_progress(
        db,
        paths,
        project=project,
        params=count_params,
        tokens_per_step=count_tps,
        fmt=format.value if format else None,
        schedule=schedule.value if schedule else None,
    )
    _print_report(report)
    for info in report.infos:
        for warning in info.warnings:
            err_console.print(
                f"warning: {Path(info.path).name}: {warning}", highlight=False, markup=False
            )
    if report.skipped:
        shown = report.skipped[:10]
        console.print(f"skipped {len(report.skipped)} file(s) that are not logs:")
        for path, reason in shown:
            console.print(f"  {path}: {reason}", highlight=False, markup=False)
        if len(report.skipped) > len(shown):
            console.print(f"  … and {len(report.skipped) - len(shown)} more")
    code = report.exit_code
    if code == 2:
        err_console.print(
            "some rows were rejected: see them with "
            f'`scalefit sql "select path, row_number, reason from quarantine" --db {db}`'
        )
    if code:
        raise typer.Exit(code)


def ingest_with_progress(
    db: Path,
    paths: list[Path],
    *,
    project: str | None,
    params: float | None,
    tokens_per_step: float | None,
    fmt: str | None,
    schedule: str | None,
) -> _ingest.IngestReport:
    """:func:`scalefit.load.logs.ingest_paths` with a progress bar on stderr (bytes and files
    done, the file being read), gone when it ends."""
    from rich.markup import escape
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from ..load import logs as _ingest

    files, _ = _ingest.discover(paths)
    total = sum(f.stat().st_size for f in files) or 1
    done_bytes = 0

    with Progress(
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        TextColumn("{task.fields[files]}"),
        TimeElapsedColumn(),
        console=err_console,
        transient=True,
    ) as bar:
        task = bar.add_task("ingesting", total=total, files=f"0/{len(files)} files")

        def progress(event: _ingest.IngestProgress) -> None:
            nonlocal done_bytes
            if event.info is None:
                # A file name is text, not markup ("run[1].csv").
                name = escape(event.path.name)
                bar.update(task, description=f"{name}: {event.rows_read:,} rows")
                return
            done_bytes += event.bytes_total
            bar.update(
                task,
                completed=done_bytes,
                files=f"{event.file_index + 1}/{event.n_files} files",
            )

        return _ingest.ingest_paths(
            db,
            paths,
            project=project,
            params=params,
            tokens_per_step=tokens_per_step,
            fmt=fmt,
            progress=progress,
            schedule=schedule,
        )


def _print_report(report: _ingest.IngestReport) -> None:
    from rich.table import Table

    table = Table(title="scalefit ingest", title_justify="left")
    for name in ("file", "format", "result", "rows in", "ok", "rejected", "note"):
        table.add_column(name, justify="right" if name in ("rows in", "ok", "rejected") else "left")
    style = {"failed": "red", "rejected_rows": "yellow", "unchanged": "dim"}
    for info in report.infos[:50]:
        result = info.status if info.status in ("failed", "unchanged") else info.mode
        table.add_row(
            Path(info.path).name,
            info.format or "",
            f"[{style.get(info.status, 'green')}]{result}[/]",
            f"{info.rows_in:,}",
            f"{info.rows_ok:,}",
            f"{info.rows_rejected:,}",
            info.message or "",
        )
    s = report.summary
    if len(report.infos) > 50:
        table.add_row(f"… {len(report.infos) - 50} more", "", "", "", "", "", "")
    table.add_section()
    table.add_row(
        f"{s['files']} file(s)",
        "",
        f"{s['unchanged']} unchanged, {s['failed']} failed",
        f"{s['rows_in']:,}",
        f"{s['rows_ok']:,}",
        f"{s['rows_rejected']:,}",
        f"{s['skipped']} skipped",
    )
    console.print(table)
