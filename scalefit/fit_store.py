"""Fits and the store: selecting the points to fit, recording what a fit used, saving it.

The fitting package (:mod:`scalefit.fit`) takes points and returns a ``LawFit``; it imports
nothing of the store. This module sits beside the store: it reads points from a file
(:func:`read_points`) or selects them from the store (:func:`select_points`), describes a
fit's input as data (:func:`store_input`, :func:`file_input`, :func:`describe_input`) and
writes fits (:func:`save_fit`). It imports nothing of fitting at run time either, so that
reports can read what a fit recorded without loading the fitting code.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import polars as pl

import scalefit

from . import fit_select
from ._points_csv import file_input  # polars-free, for `scalefit fit --input`
from .errors import FitError
from .fit_select import DEFAULT_WARMUP, Selection

if TYPE_CHECKING:
    import duckdb

    from .fit import LawFit

# The store (DuckDB, pandera: ~0.2 s) is imported where it is used, so that recording a fit
# to a file (`scalefit fit --input`, :func:`file_input`) does not load it.

__all__ = [
    "describe_input",
    "file_input",
    "read_points",
    "save_fit",
    "select_points",
    "select_runs",
    "store_input",
    "with_selection",
]


def _selected_runs(
    con: duckdb.DuckDBPyConnection,
    where: str | None,
    project: str | None,
    run_ids: Sequence[str] | None,
) -> tuple[str, list[Any]]:
    """SQL of the selected ``runs`` rows and its parameters: the user's predicate is
    evaluated once (:func:`scalefit.user_sql.run_ids_where`) and only matching ids travel on."""
    from . import user_sql

    ids = user_sql.run_ids_where(con, where) if where and where.strip() else None
    if run_ids is not None:
        wanted = set(run_ids)
        ids = [i for i in (ids if ids is not None else run_ids) if i in wanted]
    conds: list[str] = []
    params: list[Any] = []
    if ids is not None:
        conds.append("run_id IN (SELECT unnest(?::VARCHAR[]))")
        params.append(list(ids))
    if project is not None:
        conds.append("project = ?")
        params.append(project)
    return "SELECT * FROM runs" + (" WHERE " + " AND ".join(conds) if conds else ""), params


def select_runs(
    con: duckdb.DuckDBPyConnection,
    *,
    where: str | None = None,
    metric: str | None = None,
    project: str | None = None,
    run_ids: Sequence[str] | None = None,
    points: str = "final",
    warmup: float = DEFAULT_WARMUP,
) -> Selection:
    """The points of the selected runs, and what each run contributed or why it was left out.

    Parameters
    ----------
    con
        An open store connection; with ``where``, one from
        :func:`scalefit.user_sql.connect_locked` (the predicate is a user's SQL).
    where
        Predicate on the ``runs`` columns (e.g. ``"project = 'sweep'"``); default all. It is
        checked and evaluated on ``con`` (:func:`scalefit.user_sql.run_ids_where`) and only
        the matching run ids are used from then on.
    metric
        Observation metric every run must use; default per run, the first it has of
        :data:`~scalefit.schemas.vocabulary.METRIC_PREFERENCE`.
    project, run_ids
        Only runs of this project / with these ids (bound as parameters).
    points, warmup
        Which observations of each run (:data:`~scalefit.schemas.vocabulary.POINT_MODES`),
        and the fraction of a run's tokens whose checkpoints are left out (see
        :mod:`scalefit.fit_select`).
    """
    runs, params = _selected_runs(con, where, project, run_ids)
    return fit_select.select(con, runs, params, mode=points, warmup=warmup, metric=metric)


def select_points(
    con: duckdb.DuckDBPyConnection,
    *,
    where: str | None = None,
    metric: str | None = None,
    project: str | None = None,
    run_ids: Sequence[str] | None = None,
    points: str = "final",
    warmup: float = DEFAULT_WARMUP,
) -> pl.DataFrame:
    """The points of :func:`select_runs` (by default the final observation of each run).

    Returns
    -------
    polars.DataFrame
        ``run_id, step, metric, params, tokens, flops, unique_tokens, loss``: the
        observation's ids, tokens and FLOPs (tokens from the observation, else steps x the
        run's ``tokens_per_step``, else at the last step the run's); ``unique_tokens`` from
        the run (for the data-constrained law).
    """
    return select_runs(
        con,
        where=where,
        metric=metric,
        project=project,
        run_ids=run_ids,
        points=points,
        warmup=warmup,
    ).points


def with_selection(result: LawFit, selection: Selection) -> LawFit:
    """``result`` with the point mode in its settings, so that the fit id tells fits of
    different point sets apart (``final``, today's, adds nothing: its ids are unchanged)."""
    if selection.mode == "final":
        return result
    extra = {"points": selection.mode, "warmup": selection.warmup}
    return dataclasses.replace(result, settings={**result.settings, **extra})


def store_input(
    points: pl.DataFrame | Selection,
    *,
    predicate: str | None = None,
    project: str | None = None,
) -> dict[str, Any]:
    """The record of a fit to points from :func:`select_runs` (or :func:`select_points`):
    what selected them (as data: the predicate's text, the project, the point mode, the
    metric) and how many; their ids go to ``fit_points`` (:func:`save_fit`)."""
    selection = points if isinstance(points, Selection) else None
    frame = selection.points if selection is not None else points
    assert isinstance(frame, pl.DataFrame)
    metrics = frame["metric"].unique().to_list() if "metric" in frame.columns else []
    out: dict[str, Any] = {
        "source": "store",
        "predicate": (predicate or "").strip(),
        "project": project,
        "metric": metrics[0] if len(metrics) == 1 else None,
        "n_points": frame.height,
    }
    if selection is not None:
        single = out["metric"]
        out.update(selection.record())
        out["metric"] = selection.metric or single
    return out


def read_points(path: str | Path) -> pl.DataFrame:
    """Read a CSV or Parquet file of points (columns ``params``, ``tokens``, ``loss``;
    optional ``flops``, ``run_id``, and ``unique_tokens`` for the data-constrained law).

    Raises
    ------
    FitError
        The file is missing or not ``.csv``/``.parquet``.
    """
    p = Path(path)
    if not p.is_file():
        raise FitError(f"no file at {p}: check the path given to --input")
    suffix = p.suffix.lower()
    if suffix == ".csv":
        return pl.read_csv(p)
    if suffix in (".parquet", ".pq"):
        return pl.read_parquet(p)
    raise FitError(f"cannot read {p}: use a .csv or .parquet file")


def describe_input(input: Mapping[str, Any]) -> str:
    """A fit's record in words, for ``fits.selection`` (read, never run)."""
    if input.get("source") == "file":
        return f"file {input.get('path')} (sha256 {str(input.get('sha256'))[:12]})"
    parts = []
    if input.get("project") is not None:
        parts.append(f"project {input['project']!r}")
    if input.get("predicate"):
        parts.append(f"runs matching {input['predicate']!r}")
    what = ", ".join(parts) or "all runs"
    metric = input.get("metric") or ", ".join(input.get("metrics") or []) or None
    mode = input.get("points", "final")
    how = f"{mode} points" + (f" past {input['warmup']:g} warm-up" if "warmup" in input else "")
    return f"store: {what}; metric {metric}; {how}; {input.get('n_points')} points"


def _law_row(result: LawFit, law_id: str | None, selection: str) -> pl.DataFrame:
    """The ``laws`` row of a fit's law (origin ``fitted``)."""
    return pl.DataFrame(
        [
            {
                "law_id": law_id or result.fit_id,
                "form": result.law.form,
                "origin": "fitted",
                "parameters": result.law_parameters_json(),
                "source_id": None,
                "fit_id": result.fit_id,
                "locator": None,
                "notes": f"{result.form} fit by scalefit {scalefit.__version__} to {selection}",
            }
        ],
        schema_overrides={"source_id": pl.String, "locator": pl.String},
    )


def _samples_frame(result: LawFit) -> pl.DataFrame:
    """The ``fit_samples`` rows of a fit: one per resample and quantity (finite values)."""
    return pl.DataFrame(
        {
            "fit_id": result.fit_id,
            "sample": np.repeat(np.arange(result.samples.shape[0]), len(result.sample_names)),
            "parameter": np.tile(
                np.asarray(result.sample_names, dtype=object), result.samples.shape[0]
            ),
            "value": result.samples.reshape(-1),
        },
        schema={
            "fit_id": pl.String,
            "sample": pl.Int64,
            "parameter": pl.String,
            "value": pl.Float64,
        },
    ).filter(pl.col("value").is_finite())


def save_fit(
    con: duckdb.DuckDBPyConnection,
    result: LawFit,
    *,
    selection: str | None = None,
    law_id: str | None = None,
    input: Mapping[str, Any] | None = None,
    points: pl.DataFrame | None = None,
) -> str:
    """Write ``result`` to ``fits`` and its law to ``laws`` (origin ``fitted``) in one
    transaction; idempotent (both are upserts keyed by the deterministic fit id).

    Parameters
    ----------
    selection
        The data in words (``fits.selection``); default :func:`describe_input` of ``input``.
    input
        What was fitted, as data (:func:`store_input`, :func:`file_input`): ``fits.input``.
    points
        The points fitted, from :func:`select_points`: their ``run_id``, ``step`` and
        ``metric`` go to ``fit_points``, so that reports can read them again by id.
    law_id
        Key of the law's row in ``laws``; default the fit id. A stable name (e.g.
        ``fitted_<project>_chinchilla``) makes a scheduled refit replace its law in place
        (its ``fit_id`` then points to the newest fit) instead of adding a law per fit.
    The bootstrap samples go to ``fit_samples`` (one row per resample and quantity) in the
    same transaction.

    Returns
    -------
    str
        The fit id.
    """
    from . import store

    if selection is None:
        selection = describe_input(input) if input is not None else ""
    fit_row = pl.DataFrame([result.to_row(selection=selection, input=input)])
    ids = ("run_id", "step", "metric")
    fit_points = (
        points.select(pl.lit(result.fit_id).alias("fit_id"), *ids)
        if points is not None and all(c in points.columns for c in ids)
        else None
    )
    law_row = _law_row(result, law_id, selection)
    samples = _samples_frame(result)
    with store.transaction(con):
        store.write(con, "fits", fit_row)
        store.write(con, "laws", law_row)
        store.write(con, "fit_samples", samples, replace_where=f"fit_id = '{result.fit_id}'")
        if fit_points is not None:
            store.write(con, "fit_points", fit_points, replace_where=f"fit_id = '{result.fit_id}'")
    return result.fit_id
