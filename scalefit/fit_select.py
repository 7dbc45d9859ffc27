"""Which observations of the store a fit uses: per-run metrics, point modes, every run counted.

:func:`select` reads the selected runs' observations once and decides, run by run:

- **the metric**: the first of :data:`~scalefit.schemas.vocabulary.METRIC_PREFERENCE` the
  run has a usable point of (held-out losses first, then the generic ``loss``, then the
  training loss), or the one forced by ``metric``;
- **the points** (:data:`~scalefit.schemas.vocabulary.POINT_MODES`): ``final`` (the last
  usable observation), ``checkpoints`` (every one from a warm-up fraction of the run's tokens
  on: :data:`~scalefit._names.DEFAULT_WARMUP`), ``envelope`` (of those, the ones on the
  lower envelope of loss against compute over all runs: Hoffmann et al. 2022's approach 1 as
  a point set);
- **why a run is left out**: no parameter count, no observation of any metric wanted, or no
  token count for any of them.

A point is usable when its loss is a positive finite number and its tokens (the
observation's, else ``step x tokens_per_step``, else the run's total at its last step) and
FLOPs (if known) are positive: a step logged before any training is no point on a law.

The result (:class:`Selection`) carries the points, one row per run saying what it
contributed or why not, and the warnings of the selection (metrics mixed across runs,
checkpoints of cosine-decay runs). This module reads the store and imports nothing of
fitting, like :mod:`scalefit.fit_store`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import polars as pl

from ._names import DEFAULT_WARMUP, METRIC_PREFERENCE, POINT_MODES
from .errors import FitError

if TYPE_CHECKING:
    import duckdb

__all__ = ["DEFAULT_WARMUP", "METRIC_PREFERENCE", "POINT_COLUMNS_SQL", "Selection", "select"]

POINT_COLUMNS_SQL = """
    r.run_id, o.step, o.metric, r.params,
    coalesce(o.tokens, o.step * r.tokens_per_step,
             CASE WHEN o.step = last.last_step THEN r.tokens END) AS tokens,
    coalesce(o.flops, CASE WHEN o.step = last.last_step THEN r.flops END) AS flops,
    r.unique_tokens, o.value AS loss
"""
"""A point's columns from an observation ``o``, its run ``r`` and ``last`` (the run's last
step of that metric): tokens from the observation, else steps x tokens per step, else at the
last step the run's total; FLOPs from the observation, else at the last step the run's. Shared
with the reports, which read a fit's points again by id."""

_POINTS_SQL = (
    """
    WITH r AS ({runs}),
    o AS (SELECT o.* FROM observations o JOIN r USING (run_id)
          WHERE list_contains(?::VARCHAR[], o.metric)),
    last AS (SELECT run_id, metric, max(step) AS last_step FROM o GROUP BY run_id, metric)
    SELECT """
    + POINT_COLUMNS_SQL
    + """
    FROM o JOIN last USING (run_id, metric) JOIN r USING (run_id)
    ORDER BY r.run_id, o.metric, o.step
"""
)


@dataclass(frozen=True)
class Selection:
    """The points of a fit from the store, and what each selected run contributed.

    ``points``: ``run_id, step, metric, params, tokens, flops, unique_tokens, loss``.
    ``runs``: one row per selected run, ``run_id, metric, points, left_out`` (the reason a
    run gave no point, else null). ``warnings``: the selection's, each one line."""

    points: pl.DataFrame
    runs: pl.DataFrame
    mode: str
    warmup: float
    metric: str | None
    warnings: tuple[str, ...] = ()

    def runs_json(self) -> list[dict[str, Any]]:
        """The ``runs`` rows as JSON objects (``left_out`` only where a run was left out)."""
        rows = []
        for row in self.runs.to_dicts():
            out = {"run_id": row["run_id"], "metric": row["metric"], "points": row["points"]}
            if row["left_out"] is not None:
                out["left_out"] = row["left_out"]
            rows.append(out)
        return rows

    def left_out(self) -> str:
        """The runs left out, counted by reason (``""`` when none was)."""
        left = self.runs.filter(pl.col("points") == 0)
        reasons = left.group_by("left_out").len().sort(["len", "left_out"], descending=True)
        return "; ".join(f"{n} {'run' if n == 1 else 'runs'}: {r}" for r, n in reasons.rows())

    def record(self) -> dict[str, Any]:
        """What chose the points, as data (part of ``fits.input``)."""
        out: dict[str, Any] = {"points": self.mode, "metric": self.metric}
        if self.mode != "final":
            out["warmup"] = self.warmup
        used = self.runs.filter(pl.col("points") > 0)
        out["metrics"] = sorted(used["metric"].unique().to_list())
        out["runs_used"] = used.height
        out["runs_left_out"] = self.runs.height - used.height
        return out


def check_mode(mode: str, warmup: float) -> None:
    """Refuse an unknown point mode or a warm-up outside [0, 1)."""
    if mode not in POINT_MODES:
        raise FitError(f"unknown --points {mode!r}; allowed: {', '.join(POINT_MODES)}")
    if not (0.0 <= warmup < 1.0):
        raise FitError(f"--warmup must be a fraction of the run's tokens in [0, 1), got {warmup}")


def _run_columns(con: duckdb.DuckDBPyConnection) -> set[str]:
    """The columns the store's ``runs`` table has (a store may predate a column)."""
    from . import store

    rows = store.run(
        con,
        "SELECT column_name FROM duckdb_columns() WHERE schema_name = 'main' "
        "AND table_name = 'runs'",
    )
    return {r[0] for r in rows}


def _observed_metrics(con: duckdb.DuckDBPyConnection, runs: str, params: list[Any]) -> pl.DataFrame:
    """Each selected run with its params, schedule (if the store has it) and metrics."""
    from . import store

    schedule = "r.schedule" if "schedule" in _run_columns(con) else "NULL::VARCHAR"
    sql = f"""
        SELECT r.run_id, r.params, {schedule} AS schedule,
               list_sort(list(DISTINCT o.metric) FILTER (WHERE o.metric IS NOT NULL))
                 AS metrics
        FROM ({runs}) r LEFT JOIN observations o USING (run_id)
        GROUP BY r.run_id, r.params, schedule ORDER BY r.run_id
    """
    return store.query(con, sql, params)


def _usable(frame: pl.DataFrame) -> pl.DataFrame:
    """Rows that can be a point: positive finite loss and tokens, FLOPs positive if known."""
    return frame.filter(
        pl.col("loss").is_finite()
        & (pl.col("loss") > 0)
        & pl.col("tokens").is_not_null()
        & (pl.col("tokens") > 0)
        & (pl.col("flops").is_null() | (pl.col("flops") > 0))
    )


def _choose_metrics(usable: pl.DataFrame, wanted: tuple[str, ...]) -> dict[str, str]:
    """Run id -> the first metric of ``wanted`` it has a usable point of."""
    rank = {m: i for i, m in enumerate(wanted)}
    have = usable.select("run_id", "metric").unique()
    best: dict[str, str] = {}
    for run_id, metric in have.iter_rows():
        if run_id not in best or rank[metric] < rank[best[run_id]]:
            best[run_id] = metric
    return best


def _pick(usable: pl.DataFrame, mode: str, warmup: float) -> pl.DataFrame:
    """The points of ``mode`` among one metric's usable rows per run."""
    if mode == "final":
        return usable.filter(pl.col("step") == pl.col("step").max().over("run_id"))
    later = usable.filter(pl.col("tokens") >= warmup * pl.col("tokens").max().over("run_id"))
    if mode == "checkpoints":
        return later
    # The lower envelope: a point is on it when no point of any run reached a loss as low
    # with no more compute (FLOPs as logged, else 6 N D).
    compute = pl.coalesce(pl.col("flops"), 6.0 * pl.col("params") * pl.col("tokens"))
    ordered = later.with_columns(compute.alias("_c")).sort(["_c", "loss"])
    best_before = ordered["loss"].cum_min().shift(1, fill_value=float("inf"))
    return ordered.filter(ordered["loss"] < best_before).drop("_c").sort(["run_id", "step"])


def _why_left_out(row: dict[str, Any], wanted: tuple[str, ...], forced: str | None) -> str:
    """Why a run gave no usable observation, in words."""
    if row["params"] is None or not row["params"] > 0:
        return "no parameter count (`params`)"
    has = row["metrics"] or []
    if not has:
        return "no observations"
    if not set(has) & set(wanted):
        listed = ", ".join(has)
        if forced is not None:
            return f"no `{forced}` observations (has: {listed})"
        return f"none of the metrics {', '.join(wanted)} (has: {listed}; pass --metric to use one)"
    return (
        "no token count: its observations have no `tokens`, the run no `tokens_per_step` "
        "and no total `tokens`"
    )


def _accounting(
    runs: pl.DataFrame,
    points: pl.DataFrame,
    chosen: dict[str, str],
    wanted: tuple[str, ...],
    forced: str | None,
) -> pl.DataFrame:
    """One row per selected run: the metric it contributed, its points, or why none."""
    counts = dict(points.group_by("run_id").len().iter_rows())
    rows = []
    for row in runs.to_dicts():
        run_id = row["run_id"]
        metric = chosen.get(run_id)
        n = int(counts.get(run_id, 0))
        if metric is None:
            reason: str | None = _why_left_out(row, wanted, forced)
        else:
            reason = None if n else "no point on the envelope (other runs reach lower loss)"
        rows.append({"run_id": run_id, "metric": metric, "points": n, "left_out": reason})
    schema = {"run_id": pl.String, "metric": pl.String, "points": pl.Int64, "left_out": pl.String}
    return pl.DataFrame(rows, schema=schema)


def _warnings(runs: pl.DataFrame, accounting: pl.DataFrame, mode: str) -> list[str]:
    """Metrics mixed across runs; left-out runs; checkpoints of cosine-decay runs."""
    out = []
    used = accounting.filter(pl.col("points") > 0)
    per_metric = used.group_by("metric").len().sort("metric").iter_rows()
    mixed = [f"{metric} ({n} run{'s' if n > 1 else ''})" for metric, n in per_metric]
    if len(mixed) > 1:
        out.append(
            f"the points mix metrics: {', '.join(mixed)}; losses measured on different data "
            "are not comparable: pass --metric to fit one"
        )
    left = accounting.filter(pl.col("metric").is_null())
    if left.height:
        out.append(f"{left.height} of {accounting.height} selected runs left out (see `runs`)")
    cosine = runs.filter(
        (pl.col("schedule") == "cosine") & pl.col("run_id").is_in(used["run_id"].implode())
    )["run_id"].to_list()
    if mode == "checkpoints" and cosine:
        out.append(
            f"--points checkpoints on cosine-decay runs ({', '.join(cosine)}): their "
            "intermediate checkpoints are above the final loss of a shorter run (the "
            "learning rate has not decayed; Hoffmann et al. 2022), so the law is biased. "
            "Use --points final or --points envelope, or runs with a constant or WSD "
            "schedule, whose checkpoints approximate shorter runs' final losses "
            "(Hägele et al. 2024)"
        )
    return out


def select(
    con: duckdb.DuckDBPyConnection,
    runs_sql: str,
    params: list[Any],
    *,
    mode: str = "final",
    warmup: float = DEFAULT_WARMUP,
    metric: str | None = None,
) -> Selection:
    """The points of the runs ``runs_sql`` selects (bound with ``params``): see the module
    docstring. ``metric`` forces one metric for every run; ``warmup`` is the fraction of a
    run's tokens whose checkpoints ``checkpoints`` and ``envelope`` leave out."""
    from . import store

    check_mode(mode, warmup)
    wanted = METRIC_PREFERENCE if metric is None else (metric,)
    runs = _observed_metrics(con, runs_sql, params)
    rows = store.query(con, _POINTS_SQL.format(runs=runs_sql), [*params, list(wanted)])
    usable = _usable(rows)
    chosen = _choose_metrics(usable, wanted)
    mine = usable.join(
        pl.DataFrame(
            {"run_id": list(chosen), "metric": list(chosen.values())},
            schema={"run_id": pl.String, "metric": pl.String},
        ),
        on=["run_id", "metric"],
    )
    points = _pick(mine, mode, warmup).sort(["run_id", "step"]).select(rows.columns)
    accounting = _accounting(runs, points, chosen, wanted, metric)
    warns = _warnings(runs, accounting, mode)
    return Selection(points, accounting, mode, warmup, metric, tuple(warns))
