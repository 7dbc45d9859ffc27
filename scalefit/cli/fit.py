"""``scalefit fit``: fit a scaling law to a file of points or to runs in the store."""

from __future__ import annotations

import contextlib
import sys
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Annotated

import typer

from .._names import LAW_NAMES  # not scalefit.fit: numpy and polars take ~0.4 s
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
            help="Metric of the store's observations.",
            show_default="eval_loss, else loss, else train_loss",
        ),
    ] = None,
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
        str, typer.Option("--resample", help="Bootstrap unit: points, runs or params.")
    ] = "points",
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

    Reads points from --input, or without it the last observation of each run selected by
    --where from the store. Prints the estimates, intervals and diagnostics.
    """
    from .. import fit as fitting
    from .. import fit_store
    from ..errors import FitError

    settings = read_settings(
        config,
        db=("--db", db),
        fit_where=("--where", where),
        seed=("--seed", seed),
        jobs=("--jobs", jobs),
    )
    db_path, seed, jobs = settings.db, settings.seed, settings.jobs
    where = settings.fit_where or None
    if law not in LAW_NAMES:
        raise FitError(f"unknown --law {law!r}; allowed: {', '.join(LAW_NAMES)}")
    form = fitting.named_form(law, irreducible=irreducible)
    if extrapolate and form not in fitting.FORMS:
        raise FitError(
            f"--extrapolate needs a law fitted by the Huber engine "
            f"({', '.join(k for k, v in LAW_NAMES.items() if v in fitting.FORMS)}), not {law}"
        )
    if input is not None:
        data = fit_store.read_points(input)
        record = fit_store.file_input(input)
    else:
        from .. import user_sql  # not imported for --input: pandera and DuckDB take ~0.2 s

        # --where is a user's SQL: checked, then evaluated on the locked read-only
        # connection; only the matching ids travel on (never the text).
        with user_sql.connect_locked(db_path) as con:
            data = fit_store.select_points(con, where=where, metric=metric)
        record = fit_store.store_input(data, predicate=where)
        if data.height == 0:
            selection = f"runs matching {where!r}" if where else "runs"
            raise FitError(
                f"no {selection} have observations in {db_path}: "
                "check --where, or pass --input FILE"
            )
    # The fit's warnings are part of its result (printed below, and in --json), so Python's
    # warning display (file, line and source) is not shown; others are shown as one line.
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with _bootstrap_pool(jobs if bootstrap else 1) as bootstrap_map:
            result = fitting.fit_named(
                data,
                law,
                delta=huber_delta,
                n_bootstrap=bootstrap,
                seed=seed,
                resample=resample,
                irreducible=irreducible,
                bootstrap_jobs=jobs,
                bootstrap_map=bootstrap_map,
            )
        score = (
            fitting.extrapolation_score(data, law=form, holdout=extrapolate, delta=huber_delta)
            if extrapolate
            else None
        )
    for message in dict.fromkeys(str(w.message) for w in caught):
        if message not in result.warnings:
            print_warning(message)
    do_save = save if save is not None else (input is None)
    if do_save:
        from .. import store

        store.use_storage_version(settings.storage_version)
        from ..compare import refresh_comparisons

        with store.connect(db_path) as con:
            fit_store.save_fit(con, result, input=record, points=data if input is None else None)
            # The saved law is compared at once, so `scalefit sql` and the reports agree.
            refresh_comparisons(con)
    if as_json:
        out = result.to_json()
        out["saved"] = bool(do_save)
        if score is not None:
            out["extrapolation"] = score.to_json()
        sys.stdout.write(json_line(out) + "\n")
        return
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
    if do_save:
        console.print(f"saved as {result.fit_id} in {db_path}", highlight=False, markup=False)


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
