"""``scalefit fit``: fit a scaling law to a file of points or to runs in the store."""

from __future__ import annotations

import contextlib
import sys
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from .._names import LAW_NAMES  # not scalefit.fit: numpy and polars take ~0.4 s
from ._common import console, handle_errors, json_line, print_rows, print_warning, read_settings
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
    ResampleOption,
    SaveOption,
    SeedSettingOption,
    WhereOption,
)

if TYPE_CHECKING:
    from ..config import Settings
    from ..fit import ExtrapolationScore, LawFit


def register(app: typer.Typer) -> None:
    """Register ``scalefit fit`` on ``app``."""
    app.command("fit")(fit_command)


@handle_errors
def fit_command(
    input: InputOption = None,
    law: LawFormOption = "chinchilla",
    where: WhereOption = None,
    metric: MetricOption = None,
    bootstrap: BootstrapOption = 1000,
    seed: SeedSettingOption = None,
    huber_delta: DeltaOption = 1e-3,
    resample: ResampleOption = "points",
    irreducible: IrreducibleOption = False,
    as_json: JsonOption = False,
    db: DbOption = None,
    save: SaveOption = None,
    extrapolate: ExtrapolateOption = 0,
    jobs: JobsOption = None,
    config: ConfigOption = None,
) -> None:
    """Fit a scaling law (Huber loss in log space, grid of starts, bootstrap intervals).

    Reads points from --input, or without it the last observation of each run selected by
    --where from the store. Prints the estimates, intervals and diagnostics.
    """
    settings = read_settings(
        config,
        db=("--db", db),
        fit_where=("--where", where),
        seed=("--seed", seed),
        jobs=("--jobs", jobs),
    )
    form = check_law(law, irreducible=irreducible, extrapolate=extrapolate)
    if input is not None:
        data, record = read_input(input)
    else:
        data, record = select_input(settings.db, settings.fit_where or None, metric)
    result, score = run_fit(
        data,
        law,
        form,
        delta=huber_delta,
        n_bootstrap=bootstrap,
        seed=settings.seed,
        resample=resample,
        irreducible=irreducible,
        jobs=settings.jobs,
        extrapolate=extrapolate,
    )
    do_save = save if save is not None else (input is None)
    if do_save:
        save_result(settings, result, record, data if input is None else None)
    if as_json:
        out = result.to_json()
        out["saved"] = bool(do_save)
        if score is not None:
            out["extrapolation"] = score.to_json()
        sys.stdout.write(json_line(out) + "\n")
        return
    print_fit(result, score, saved_in=settings.db if do_save else None)


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
    from .. import fit_store
    from .._points_csv import read_points_fast

    data: object = read_points_fast(path)  # a dict of columns, or None: then a DataFrame
    if data is None:
        data = fit_store.read_points(path)
    return data, fit_store.file_input(path)


def select_input(db_path: Path, where: str | None, metric: str | None) -> tuple[Any, dict]:
    """The last observation of each run matching ``where`` in the store, and its record."""
    from .. import fit_store, user_sql  # not for --input: pandera and DuckDB take ~0.2 s
    from ..errors import FitError

    # --where is a user's SQL: checked, then evaluated on the locked read-only connection;
    # only the matching ids travel on (never the text).
    with user_sql.connect_locked(db_path) as con:
        data = fit_store.select_points(con, where=where, metric=metric)
    record = fit_store.store_input(data, predicate=where)
    if data.height == 0:
        selection = f"runs matching {where!r}" if where else "runs"
        raise FitError(
            f"no {selection} have observations in {db_path}: check --where, or pass --input FILE"
        )
    return data, record


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


def save_result(settings: Settings, result: LawFit, record: dict, points: Any) -> None:
    """Save the fit to the store and compare its law at once (so that `scalefit sql` and
    the reports agree); ``points`` are the store's points it was fitted to (None: a file)."""
    from .. import fit_store, store
    from ..compare import refresh_comparisons

    store.use_storage_version(settings.storage_version)
    with store.connect(settings.db) as con:
        fit_store.save_fit(con, result, input=record, points=points)
        refresh_comparisons(con)


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
    console.print(lines[0], highlight=False, markup=False)
    for line in lines[1:]:
        if not line.startswith("  ") or line.lstrip().startswith(
            ("starts:", "budgets:", "warning:")
        ):
            console.print(line, highlight=False, markup=False)
    if score is not None:
        console.print(str(score), highlight=False, markup=False)
    if saved_in is not None:
        console.print(f"saved as {result.fit_id} in {saved_in}", highlight=False, markup=False)


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
