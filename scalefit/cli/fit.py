"""``scalefit fit``: fit a scaling law to a file of points or to runs in the store."""

from __future__ import annotations

import contextlib
import sys
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

# not scalefit.fit: numpy and polars take ~0.4 s
from .._names import DEFAULT_WARMUP, LAW_NAMES, METRIC_PREFERENCE, POINT_MODES
from . import app
from ._common import (
    ConfigOption,
    DbOption,
    console,
    handle_errors,
    json_line,
    print_frame,
    print_warning,
    read_settings,
    setting_help,
)

if TYPE_CHECKING:
    import polars as pl

    from ..config import Settings
    from ..fit import LawFit
    from ..fit_select import Selection


@app.command("fit")
@handle_errors
def fit_command(
    input: Annotated[
        Path | None,
        typer.Option(
            "--input",
            "-i",
            help="CSV or Parquet: params, tokens, loss (optional flops, run_id).",
            show_default="none: read runs from the store",
        ),
    ] = None,
    law: Annotated[
        str, typer.Option("--law", help=f"Law form: {', '.join(LAW_NAMES)}.")
    ] = "chinchilla",
    where: Annotated[
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
    ] = None,
    metric: Annotated[
        str | None,
        typer.Option(
            "--metric",
            help="Use this metric of the store's observations for every run.",
            show_default="per run, the first of " + ", ".join(METRIC_PREFERENCE),
        ),
    ] = None,
    points: Annotated[
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
    ] = None,
    warmup: Annotated[
        float,
        typer.Option(
            "--warmup",
            min=0.0,
            max=0.99,
            help="With --points checkpoints or envelope: leave out each run's checkpoints "
            "before this fraction of its tokens.",
        ),
    ] = DEFAULT_WARMUP,
    bootstrap: Annotated[int, typer.Option("--bootstrap", help="Bootstrap resamples.")] = 1000,
    seed: Annotated[
        int | None,
        typer.Option(
            "--seed",
            help=setting_help("Bootstrap seed.", "SCALEFIT_FIT_SEED", "fit.seed"),
            show_default="0",
        ),
    ] = None,
    huber_delta: Annotated[float, typer.Option("--huber-delta", help="Huber delta.")] = 1e-3,
    resample: Annotated[
        str | None,
        typer.Option(
            "--resample",
            help="Bootstrap unit: points, runs or params.",
            show_default="runs with --points checkpoints or envelope, else points",
        ),
    ] = None,
    irreducible: Annotated[
        bool, typer.Option("--irreducible/--no-irreducible", help="Kaplan forms: add a term E.")
    ] = False,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print one JSON object.", show_default="off")
    ] = False,
    db: DbOption = None,
    save: Annotated[
        bool | None,
        typer.Option(
            "--save/--no-save",
            help="Save to `fits`/`laws`.",
            show_default="--save when fit from the store, else --no-save",
        ),
    ] = None,
    extrapolate: Annotated[
        int,
        typer.Option(
            "--extrapolate",
            min=0,
            help="Also refit without the K largest compute budgets and score the law's "
            "predictions there (0: off).",
            metavar="K",
        ),
    ] = 0,
    jobs: Annotated[
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
    ] = None,
    config: ConfigOption = None,
) -> None:
    """Fit a scaling law (Huber loss in log space, grid of starts, bootstrap intervals).

    Reads points from --input, or without it from the runs --where selects in the store:
    each run's final observation, or its checkpoints past --warmup, or the envelope of all
    runs' checkpoints (--points), of the first metric it has in the order eval_loss,
    val_loss, validation_loss, valid_loss, loss, train_loss (or --metric). Prints the
    estimates, intervals, diagnostics, and each run's metric and points or why it was left
    out.
    """
    from .. import fit as fitting

    settings = read_settings(
        config,
        db=("--db", db),
        fit_where=("--where", where),
        seed=("--seed", seed),
        jobs=("--jobs", jobs),
        fit_points=("--points", points),
    )
    form = _check_law(law, irreducible, extrapolate)
    picked = _Data.read(input, settings, metric, points, warmup, form)
    resample = _resample(resample, picked.mode, form)
    # The fit's warnings are part of its result (printed below, and in --json), so Python's
    # warning display (file, line and source) is not shown; others are shown as one line.
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with _bootstrap_pool(settings.jobs if bootstrap else 1) as bootstrap_map:
            result = fitting.fit_named(
                picked.data,
                law,
                delta=huber_delta,
                n_bootstrap=bootstrap,
                seed=settings.seed,
                resample=resample,
                irreducible=irreducible,
                bootstrap_jobs=settings.jobs,
                bootstrap_map=bootstrap_map,
            )
        score = (
            fitting.extrapolation_score(
                picked.data, law=form, holdout=extrapolate, delta=huber_delta
            )
            if extrapolate
            else None
        )
    for message in dict.fromkeys(str(w.message) for w in caught):
        if message not in result.warnings:
            print_warning(message)
    result = picked.tag(result)
    do_save = save if save is not None else (input is None)
    if do_save:
        picked.save(result, settings)
    if as_json:
        out = {**result.to_json(), "saved": bool(do_save), **picked.to_json()}
        if score is not None:
            out["extrapolation"] = score.to_json()
        sys.stdout.write(json_line(out) + "\n")
        return
    _print_text(result, picked, score, settings.db if do_save else None)


def _check_law(law: str, irreducible: bool, extrapolate: int) -> str:
    """The form ``--law`` fits; an unknown law, or --extrapolate of a law it cannot score,
    is one line."""
    from .. import fit as fitting
    from ..errors import FitError

    if law not in LAW_NAMES:
        raise FitError(f"unknown --law {law!r}; allowed: {', '.join(LAW_NAMES)}")
    form = fitting.named_form(law, irreducible=irreducible)
    if extrapolate and form not in fitting.FORMS:
        raise FitError(
            f"--extrapolate needs a law fitted by the Huber engine "
            f"({', '.join(k for k, v in LAW_NAMES.items() if v in fitting.FORMS)}), not {law}"
        )
    return form


def _resample(resample: str | None, mode: str, form: str) -> str:
    """The bootstrap unit: as given, else whole runs when runs give several points (their
    errors are correlated) and the law is fitted by the Huber engine, else points (an
    IsoFLOP or envelope fit then uses its own unit)."""
    from .. import fit as fitting

    several = mode != "final"
    if resample is None:
        return "runs" if several and form in fitting.FORMS else "points"
    if resample == "points" and several and form in fitting.FORMS:
        print_warning(
            f"--resample points with --points {mode} treats the checkpoints of one run as "
            "independent, so the intervals are too narrow; --resample runs (the default "
            "here) resamples whole runs"
        )
    return resample


def _print_text(result: LawFit, picked: _Data, score: object, saved_to: Path | None) -> None:
    """The fit as text: estimates, summary lines, the runs it used and left out."""
    print_frame(result.to_frame(), title=f"{result.form} fit to {result.n_points} points")
    lines = str(result).splitlines()
    console.print(lines[0], highlight=False, markup=False)
    for line in lines[1:]:
        if not line.startswith("  ") or line.lstrip().startswith(
            ("starts:", "budgets:", "warning:")
        ):
            console.print(line, highlight=False, markup=False)
    if score is not None:
        console.print(str(score), highlight=False, markup=False)
    picked.print_runs()
    if saved_to is not None:
        console.print(f"saved as {result.fit_id} in {saved_to}", highlight=False, markup=False)


@dataclass(frozen=True)
class _Data:
    """The points of a fit, what chose them, and (from the store) each run's account."""

    data: pl.DataFrame
    record: dict[str, Any]
    selection: Selection | None = None

    @property
    def mode(self) -> str:
        return "final" if self.selection is None else self.selection.mode

    @classmethod
    def read(
        cls,
        input: Path | None,
        settings: Settings,
        metric: str | None,
        points: str | None,
        warmup: float,
        form: str,
    ) -> _Data:
        """Points from --input, else selected from the store (--where, --points, --metric)."""
        from .. import fit_store
        from ..errors import FitError

        if input is not None:
            if points is not None:
                raise FitError(
                    "--points chooses observations of the store's runs; the points of "
                    "--input are fitted as they are"
                )
            return cls(fit_store.read_points(input), fit_store.file_input(input))
        mode, where = settings.fit_points, settings.fit_where or None
        if form == "envelope" and mode != "checkpoints":
            raise FitError(
                f"--law envelope builds its own envelope from each run's loss curve: use "
                f"--points checkpoints (not {mode})"
            )
        from .. import store  # not imported for --input: pandera and DuckDB take ~0.2 s

        # --where is a user's SQL: checked, then evaluated on the locked read-only
        # connection; only the matching ids travel on (never the text).
        with store.connect_locked(settings.db) as con:
            sel = fit_store.select_runs(con, where=where, metric=metric, points=mode, warmup=warmup)
        for message in sel.warnings:
            print_warning(message)
        if sel.points.height == 0:
            raise FitError(_nothing_to_fit(sel, where, settings.db))
        return cls(sel.points, fit_store.store_input(sel, predicate=where), sel)

    def tag(self, result: LawFit) -> LawFit:
        """``result`` with the point mode in its settings (and so in its fit id)."""
        from .. import fit_store

        return (
            result if self.selection is None else fit_store.with_selection(result, self.selection)
        )

    def save(self, result: LawFit, settings: Settings) -> None:
        """Save the fit, its law and its points, and compare the law at once (so that
        `scalefit sql` and the reports agree)."""
        from .. import fit_store, store
        from ..compare import refresh_comparisons

        store.use_storage_version(settings.storage_version)
        points = self.data if self.selection is not None else None
        with store.connect(settings.db) as con:
            fit_store.save_fit(con, result, input=self.record, points=points)
            refresh_comparisons(con)

    def to_json(self) -> dict[str, Any]:
        """``points`` (what chose them) and ``runs`` (each run's metric and points, or why
        it was left out), for --json."""
        if self.selection is None:
            return {"points": {"source": "file"}}
        sel = self.selection
        chosen = {"mode": sel.mode, "metric": sel.metric, "warnings": list(sel.warnings)}
        if sel.mode != "final":
            chosen["warmup"] = sel.warmup
        return {"points": chosen, "runs": sel.runs_json()}

    def print_runs(self) -> None:
        """Each run's metric and points, or why it was left out: one line when every run
        contributed the same metric, else a table (grouped when there are many runs)."""
        import polars as pl

        if self.selection is None:
            return
        runs, mode = self.selection.runs, self.selection.mode
        counts = runs["points"]
        if (
            runs.height
            and runs["metric"].null_count() == 0
            and runs["metric"].n_unique() == 1
            and counts.min() > 0
        ):
            low, high = counts.min(), counts.max()
            each = f"{low}" if low == high else f"{low} to {high}"
            console.print(
                f"runs: all {runs.height} selected runs contributed {runs['metric'][0]} "
                f"({mode} points: {each} each)",
                highlight=False,
                markup=False,
            )
            return
        runs = runs.with_columns(pl.col("metric").fill_null("-"))
        title = f"runs: {mode} points"
        if runs.height > _MAX_RUN_ROWS:
            runs = (
                runs.group_by("metric", "left_out")
                .agg(pl.len().alias("runs"), pl.col("points").sum())
                .sort("metric", "left_out", nulls_last=False)
            )
        print_frame(runs.with_columns(pl.col("left_out").fill_null("")), title=title)


_MAX_RUN_ROWS = 40
"""More selected runs than this are shown grouped by metric and reason."""


def _nothing_to_fit(sel: Selection, where: str | None, db: Path) -> str:
    """Why a selection gave no point, in one line."""
    matching = f"runs matching {where!r}" if where else "runs"
    if sel.runs.height == 0:
        return (
            f"no {matching} in {db}, so no observations to fit: check --where, or pass --input FILE"
        )
    return f"none of the {sel.runs.height} {matching} gave a point to fit ({sel.left_out()})"


@contextlib.contextmanager
def _bootstrap_pool(jobs: int) -> Iterator[Callable]:
    """The builtin ``map``, or a pool of ``jobs`` processes' ``map``.

    The processes start from a ``forkserver`` (forking a process that already runs polars'
    threads can deadlock) that has imported ``scalefit.fit`` once, and they are started now,
    so that they are ready by the time the grid fit ends and the bootstrap begins."""
    if jobs <= 1:
        yield map
        return
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["scalefit.fit"])
    with ProcessPoolExecutor(jobs, mp_context=context) as pool:
        for _ in range(jobs):
            pool.submit(int)  # start the workers while the grid fit runs
        yield pool.map
