"""Fits and the store: selecting the points to fit, recording what a fit used, saving it.

The fitting package (:mod:`scalefit.fit`) takes points and returns a ``LawFit``; it imports
nothing of the store. This module sits beside the store: it reads points from a file
(:func:`read_points`) or selects them from the store (:func:`select_points`), describes a
fit's input as data (:func:`store_input`, :func:`file_input`, :func:`describe_input`) and
writes fits (:func:`save_fit`). It imports nothing of fitting at run time either, so that
reports can read what a fit recorded without loading the fitting code.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import polars as pl

import scalefit

from .errors import FitError

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
    "store_input",
]

_METRICS = ("eval_loss", "loss", "train_loss")


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


def _default_metric(con: duckdb.DuckDBPyConnection, runs: str, params: list[Any]) -> str:
    """``eval_loss`` if any selected run has it, else ``loss``, else ``train_loss``."""
    from . import store

    have = store.query(
        con,
        f"SELECT DISTINCT o.metric FROM observations o JOIN ({runs}) r USING (run_id)",
        params,
    )["metric"].to_list()
    metric = next((m for m in _METRICS if m in have), None)
    if metric is None:
        raise FitError(
            f"no observations with metric {', '.join(_METRICS)} for the selected runs "
            f"(found: {', '.join(map(str, have)) or 'none'}); pass --metric"
        )
    return metric


def select_points(
    con: duckdb.DuckDBPyConnection,
    *,
    where: str | None = None,
    metric: str | None = None,
    project: str | None = None,
    run_ids: Sequence[str] | None = None,
) -> pl.DataFrame:
    """The final observation of each run in the store, as points to fit.

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
        Observation metric to use; default ``eval_loss`` if any selected run has it, else
        ``loss``, else ``train_loss``.
    project, run_ids
        Only runs of this project / with these ids (bound as parameters).

    Returns
    -------
    polars.DataFrame
        ``run_id, step, metric, params, tokens, flops, unique_tokens, loss``: the
        observation's ids, tokens and FLOPs from the observation, else from the run;
        ``unique_tokens`` from the run (for the data-constrained law).
    """
    from . import store

    runs, params = _selected_runs(con, where, project, run_ids)
    if metric is None:
        metric = _default_metric(con, runs, params)
    sql = f"""
        WITH r AS ({runs}),
        -- a step logged before any training (tokens or FLOPs of 0) is no point on a law
        o AS (SELECT o.* FROM observations o JOIN r USING (run_id)
              WHERE o.metric = ? AND coalesce(o.tokens, 1) > 0 AND coalesce(o.flops, 1) > 0),
        last AS (SELECT run_id, max(step) AS step FROM o GROUP BY run_id)
        SELECT r.run_id, o.step, o.metric, r.params, coalesce(o.tokens, r.tokens) AS tokens,
               coalesce(o.flops, r.flops) AS flops, r.unique_tokens, o.value AS loss
        FROM o JOIN last USING (run_id, step) JOIN r USING (run_id)
        ORDER BY r.run_id
    """
    return store.query(con, sql, [*params, metric])


def store_input(
    points: pl.DataFrame, *, predicate: str | None = None, project: str | None = None
) -> dict[str, Any]:
    """The record of a fit to points from :func:`select_points`: what selected them (as
    data: the predicate's text, the project, the metric) and how many; their ids go to
    ``fit_points`` (:func:`save_fit`)."""
    metrics = points["metric"].unique().to_list() if "metric" in points.columns else []
    return {
        "source": "store",
        "predicate": (predicate or "").strip(),
        "project": project,
        "metric": metrics[0] if len(metrics) == 1 else None,
        "n_points": points.height,
    }


def file_input(path: str | Path) -> dict[str, Any]:
    """The record of a fit to a file of points: its path, sha256 and row count."""
    p = Path(path)
    digest = hashlib.sha256()
    with p.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return {"source": "file", "path": str(p), "sha256": digest.hexdigest()}


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
    return f"store: {what}; metric {input.get('metric')}; {input.get('n_points')} points"


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
