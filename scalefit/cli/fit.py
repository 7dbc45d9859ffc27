"""``scalefit fit``: fit a scaling law to a file of points or to runs in the store."""

from __future__ import annotations

import contextlib
import sys
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

# not scalefit.fit: numpy and polars take ~0.4 s
from .._names import DEFAULT_WARMUP, LAW_NAMES
from . import _common
from ._common import (
    handle_errors,
    json_line,
    print_frame,
    print_rows,
    print_warning,
    read_settings,
)
from .options import (
    BootstrapOption,
    ConfigOption,
    DbOption,
    DeltaOption,
    ExtrapolateOption,
    InputOption,
    IrreducibleOption,
    JobsOption,
    JsonOption,
    LawFormOption,
    MetricOption,
    PointsOption,
    ResampleOption,
    SaveOption,
    SeedSettingOption,
    WarmupOption,
    WhereOption,
)

if TYPE_CHECKING:
    from ..config import Settings
    from ..fit import ExtrapolationScore, LawFit
    from ..fit_select import Selection


def register(app: typer.Typer) -> None:
    """Register ``scalefit fit`` on ``app``."""
    app.command("fit")(fit_command)


@handle_errors
def fit_command(
    input: InputOption = None,
    law: LawFormOption = "chinchilla",
    where: WhereOption = None,
    metric: MetricOption = None,
    points: PointsOption = None,
    warmup: WarmupOption = DEFAULT_WARMUP,
    bootstrap: BootstrapOption = 1000,
    seed: SeedSettingOption = None,
    huber_delta: DeltaOption = 1e-3,
    resample: ResampleOption = None,
    irreducible: IrreducibleOption = False,
    as_json: JsonOption = False,
    db: DbOption = None,
    save: SaveOption = None,
    extrapolate: ExtrapolateOption = 0,
    jobs: JobsOption = None,
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
    settings = read_settings(
        config,
        db=("--db", db),
        fit_where=("--where", where),
        seed=("--seed", seed),
        jobs=("--jobs", jobs),
        fit_points=("--points", points),
    )
    form = check_law(law, irreducible=irreducible, extrapolate=extrapolate)
    picked = _Data.read(input, settings, metric, points, warmup, form)
    result, score = run_fit(
        picked.data,
        law,
        form,
        delta=huber_delta,
        n_bootstrap=bootstrap,
        seed=settings.seed,
        resample=_resample(resample, picked.mode, form),
        irreducible=irreducible,
        jobs=settings.jobs,
        extrapolate=extrapolate,
    )
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
    print_fit(result, score, saved_in=None)
    picked.print_runs()
    if do_save:
        _common.console.print(
            f"saved as {result.fit_id} in {settings.db}", highlight=False, markup=False
        )


def check_law(law: str, *, irreducible: bool, extrapolate: int) -> str:
    """The form ``--law`` names; a :class:`~scalefit.errors.FitError` for an unknown law, or
    for ``--extrapolate`` with a law the Huber engine does not fit."""
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


def read_input(path: Path) -> tuple[Any, dict[str, Any]]:
    """The points of ``--input`` (a plain numeric CSV without polars: see
    :mod:`scalefit._points_csv`) and the fit's record of them (path and sha256)."""
    from .._points_csv import file_input, read_points_fast

    data: object = read_points_fast(path)  # a dict of columns, or None: then a DataFrame
    if data is None:
        from .. import fit_store  # polars: only for what the plain reader leaves

        data = fit_store.read_points(path)
    return data, file_input(path)


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


def run_fit(
    data: Any, law: str, form: str, *, delta: float, extrapolate: int, jobs: int, **settings: Any
) -> tuple[LawFit, ExtrapolationScore | None]:
    """The fit (and the extrapolation score with ``extrapolate``). The fit's warnings are
    part of its result (printed with it, and in --json), so Python's warning display (file,
    line and source) is not shown; other warnings are printed as one line each."""
    from .. import fit as fitting

    n_bootstrap = settings["n_bootstrap"]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with _bootstrap_pool(jobs if n_bootstrap else 1) as bootstrap_map:
            result = fitting.fit_named(
                data, law, delta=delta, bootstrap_jobs=jobs, bootstrap_map=bootstrap_map, **settings
            )
        score = (
            fitting.extrapolation_score(data, law=form, holdout=extrapolate, delta=delta)
            if extrapolate
            else None
        )
    for message in dict.fromkeys(str(w.message) for w in caught):
        if message not in result.warnings:
            print_warning(message)
    return result, score


def print_fit(result: LawFit, score: ExtrapolationScore | None, *, saved_in: Path | None) -> None:
    """The fit as a table of estimates and intervals, then its summary lines."""

    def number(value: Any) -> float | None:  # as a Float64 column holds it
        return None if value is None else float(value)

    rows = [
        (name, kind, number(value), *map(number, result.ci.get(name, (None, None))))
        for kind, values in (("parameter", result.estimates), ("derived", result.derived))
        for name, value in values.items()
    ]
    print_rows(
        ("name", "kind", "estimate", "ci_low", "ci_high"),
        rows,
        numeric=("estimate", "ci_low", "ci_high"),
        title=f"{result.form} fit to {result.n_points} points",
    )
    lines = str(result).splitlines()
    _common.console.print(lines[0], highlight=False, markup=False)
    for line in lines[1:]:
        if not line.startswith("  ") or line.lstrip().startswith(
            ("starts:", "budgets:", "warning:")
        ):
            _common.console.print(line, highlight=False, markup=False)
    if score is not None:
        _common.console.print(str(score), highlight=False, markup=False)
    if saved_in is not None:
        _common.console.print(
            f"saved as {result.fit_id} in {saved_in}", highlight=False, markup=False
        )


@dataclass(frozen=True)
class _Data:
    """The points of a fit, what chose them, and (from the store) each run's account."""

    data: Any  # a polars frame, or columns read without polars (--input)
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
        from ..errors import FitError

        if input is not None:
            if points is not None:
                raise FitError(
                    "--points chooses observations of the store's runs; the points of "
                    "--input are fitted as they are"
                )
            return cls(*read_input(input))
        mode, where = settings.fit_points, settings.fit_where or None
        if form == "envelope" and mode != "checkpoints":
            raise FitError(
                f"--law envelope builds its own envelope from each run's loss curve: use "
                f"--points checkpoints (not {mode})"
            )
        from .. import fit_store, user_sql  # not for --input: polars, pandera, DuckDB

        # --where is a user's SQL: checked, then evaluated on the locked read-only
        # connection; only the matching ids travel on (never the text).
        with user_sql.connect_locked(settings.db) as con:
            sel = fit_store.select_runs(con, where=where, metric=metric, points=mode, warmup=warmup)
        for message in sel.warnings:
            print_warning(message)
        if sel.points.height == 0:
            raise FitError(_nothing_to_fit(sel, where, settings.db))
        return cls(sel.points, fit_store.store_input(sel, predicate=where), sel)

    def tag(self, result: LawFit) -> LawFit:
        """``result`` with the point mode in its settings (and so in its fit id)."""
        if self.selection is None:
            return result
        from .. import fit_store

        return fit_store.with_selection(result, self.selection)

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
        chosen: dict[str, Any] = {
            "mode": sel.mode,
            "metric": sel.metric,
            "warnings": list(sel.warnings),
        }
        if sel.mode != "final":
            chosen["warmup"] = sel.warmup
        return {"points": chosen, "runs": sel.runs_json()}

    def print_runs(self) -> None:
        """Each run's metric and points, or why it was left out: one line when every run
        contributed the same metric, else a table (grouped when there are many runs)."""
        if self.selection is None:
            return
        import polars as pl

        runs, mode = self.selection.runs, self.selection.mode
        counts = [int(c) for c in runs["points"].to_list()]
        if (
            runs.height
            and runs["metric"].null_count() == 0
            and runs["metric"].n_unique() == 1
            and min(counts) > 0
        ):
            low, high = min(counts), max(counts)
            each = f"{low}" if low == high else f"{low} to {high}"
            _common.console.print(
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
    threads can deadlock) that has imported the fitting modules once (``scalefit.fit`` itself
    imports them on first use), and they are started now, so that they are ready by the time
    the grid fit ends and the bootstrap begins."""
    if jobs <= 1:
        yield map
        return
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["scalefit.fit.parametric", "scalefit.fit.bootstrap"])
    with ProcessPoolExecutor(jobs, mp_context=context) as pool:
        for _ in range(jobs):
            pool.submit(int)  # start the workers while the grid fit runs
        yield pool.map
