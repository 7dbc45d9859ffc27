"""``scalefit studies list|load`` and ``scalefit reproduce``: published run datasets."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from ._common import console, handle_errors, print_frame, print_warning, read_settings
from .options import (
    ConfigOption,
    DbOption,
    JsonArrayOption,
    ReproduceBootstrapOption,
    ReproduceJsonOption,
    SeedOption,
    StudyArgument,
)

if TYPE_CHECKING:
    import polars as pl


def register(app: typer.Typer) -> None:
    """Register ``scalefit studies list|load`` and ``scalefit reproduce`` on ``app``."""
    studies_app = typer.Typer(
        help="Published run datasets (studies): list them, load them into the store.",
        no_args_is_help=True,
    )
    studies_app.command("list")(list_command)
    studies_app.command("load")(load_command)
    app.add_typer(studies_app, name="studies")
    app.command("reproduce")(reproduce_command)


def _load(db: Path | None, name: str, config: Path | None):
    from .. import store
    from ..load import studies

    # [upstream] mirror, cache and offline say where the study's files come from.
    settings = read_settings(config, db=("--db", db))
    study = studies.get_study(name)
    with store.connect(settings.db) as con:
        info = studies.load_study(
            con,
            study,
            mirror=settings.mirror,
            cache_dir=settings.cache,
            offline=True if settings.offline else None,
        )
    return study, info, settings.db


@handle_errors
def list_command(
    db: DbOption = None, as_json: JsonArrayOption = False, config: ConfigOption = None
) -> None:
    """The declared studies (datasets/studies/*.toml), and how many of their runs the store
    holds (when the store exists)."""
    from .. import store
    from ..load import studies

    db = read_settings(config, db=("--db", db)).db
    if db.exists():
        with store.connect(db, read_only=True) as con:
            frame = studies.studies_table(con)
    else:
        frame = studies.studies_table()
    print_frame(frame, "json" if as_json else "table", title="studies")


@handle_errors
def load_command(name: StudyArgument, db: DbOption = None, config: ConfigOption = None) -> None:
    """Load a study's runs and observations into the store: files from the mirror
    ([upstream] mirror or SCALEFIT_UPSTREAM_MIRROR), the cache, or a download, each verified
    against its pinned sha256. Loading the same files again changes nothing."""
    with console.status(f"Loading {name}…"):
        _, info, _ = _load(db, name, config)
    console.print(info.message, markup=False, highlight=False)
    if info.rejected:
        query = f"SELECT path, reason FROM quarantine WHERE ingest_id = '{info.ingest_id}'"
        print_warning(f'{info.rejected} run file(s) quarantined: scalefit sql "{query}"')


def _pct(column: str) -> pl.Expr:
    import polars as pl

    return (
        pl.when(pl.col(column).is_null())
        .then(pl.lit(""))
        .otherwise(pl.format("{}%", (pl.col(column) * 100).round(2)))
        .alias(column)
    )


def reproduction_tables(frame: pl.DataFrame) -> list[tuple[str, pl.DataFrame]]:
    """The reproduction tables as the refresh prints them (and the README shows them): per
    study, the paper's claims, then every form beyond the paper (relative errors in %)."""
    import polars as pl

    from ..reproduce import beyond_table, paper_table

    out = []
    for study in frame["study"].unique(maintain_order=True).to_list():
        sub = frame.filter(pl.col("study") == study)
        paper = paper_table(sub).drop("study")
        is_prediction = paper["quantity"].is_in(["loss", "downstream_error"]).any()
        paper = paper.with_columns(
            _pct("relative_error"),
            _pct("paper") if is_prediction else pl.col("paper"),
        )
        if paper["dataset"].null_count() == paper.height:
            paper = paper.drop("dataset", "run", "observed")
        out.append((f"{study}: the paper's claims, recomputed", paper))
        beyond = (
            beyond_table(sub)
            .drop("study")
            .with_columns(_pct("mean_rel_error"), _pct("max_rel_error"))
        )
        if beyond["dataset"].null_count() == beyond.height:
            beyond = beyond.drop("dataset")
        out.append((f"{study}: beyond the paper (every form, same split, held-out runs)", beyond))
    return out


def print_reproduction_tables(frame: pl.DataFrame) -> None:
    """Print :func:`reproduction_tables`."""
    for title, table in reproduction_tables(frame):
        print_frame(table, "table", title=title)


@handle_errors
def reproduce_command(
    name: StudyArgument,
    db: DbOption = None,
    as_json: ReproduceJsonOption = False,
    bootstrap: ReproduceBootstrapOption = 100,
    seed: SeedOption = 0,
    config: ConfigOption = None,
) -> None:
    """Recompute a study's paper claims from its runs (loading the study first if needed),
    and fit every registered form beyond the paper."""
    from .. import reproduce, store

    with console.status(f"Reproducing {name}…"):
        study, _, db_path = _load(db, name, config)
        with store.connect(db_path, read_only=True) as con:
            result = reproduce.reproduce(con, study, n_bootstrap=bootstrap, seed=seed)
    if as_json:
        sys.stdout.write(json.dumps(result.to_json()) + "\n")
        return
    print_reproduction_tables(result.frame())
