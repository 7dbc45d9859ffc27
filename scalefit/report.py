"""Reports: Parquet files (and plots) written from the store, never half-written.

Each Parquet file carries key-value metadata (``scalefit.version``, ``scalefit.created_at``,
``scalefit.input_sha256`` and the table it came from) so a reader can tell which data and
which version produced it, and describes its own columns: ``scalefit.columns`` (JSON: each
column's ``description`` and ``unit``) and the same two on every Arrow field, from the schemas
(``schemas/reports.py`` lists which schemas define each report's columns). Files are written
to a temporary name in the same folder and renamed into place, so a reader sees the old file
or the new one, never a partial one.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import duckdb
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

import scalefit

from . import compare, plots, store
from ._files import atomic_path
from .errors import ReportError
from .fit_select import POINT_COLUMNS_SQL
from .laws import Law, LossLaw

log = logging.getLogger(__name__)

DEFAULT_REPORTS = Path("reports")
"""Default reports folder, relative to the working directory."""

REPORT_QUERIES: dict[str, str] = {
    "models": "SELECT * FROM models ORDER BY family, params",
    "fits": (
        "SELECT f.fit_id, l.law_id, l.law_caveat, "
        "f.* EXCLUDE (fit_id, estimates, ci_low, ci_high) FROM fits AS f "
        "LEFT JOIN (SELECT fit_id, min(law_id) AS law_id, min(caveat) AS law_caveat FROM laws "
        "WHERE fit_id IS NOT NULL GROUP BY fit_id) AS l USING (fit_id) ORDER BY f.created_at"
    ),
}
"""Parquet reports that are plain views of the store: file stem -> query. ``fits`` leaves
its JSON estimates and intervals to ``fit_parameters`` (typed, one row per parameter)."""

FITS_PARAMETERS_SQL = (
    "SELECT f.fit_id, l.law_id, f.procedure, f.form, f.estimates, f.ci_low, f.ci_high, "
    "f.confidence_level "
    "FROM fits AS f LEFT JOIN (SELECT fit_id, min(law_id) AS law_id FROM laws "
    "WHERE fit_id IS NOT NULL GROUP BY fit_id) AS l USING (fit_id) ORDER BY f.created_at"
)
LAWS_REPORT_SQL = (
    "SELECT law_id, form, origin, parameters, source_id, fit_id, locator, notes, caveat "
    "FROM laws ORDER BY law_id"
)


@dataclass(frozen=True, slots=True)
class ReportInfo:
    """What a report run wrote."""

    directory: Path
    files: dict[str, int] = field(default_factory=dict)
    """File name -> rows (Parquet) or bytes (plots)."""
    not_compared: dict[str, str] = field(default_factory=dict)
    """Law id -> why the law is not in ``comparisons`` and ``frontier`` (it cannot allocate)."""


def frame_sha256(frame: pl.DataFrame) -> str:
    """A content hash of a frame (row order included)."""
    digest = hashlib.sha256()
    for batch in frame.to_arrow().to_batches():
        for column in batch.columns:
            for buffer in column.buffers():
                if buffer is not None:
                    digest.update(buffer)
    return digest.hexdigest()


def column_docs(report: str, columns: list[str]) -> dict[str, dict[str, str]]:
    """Each of ``columns`` of ``report`` (a file stem of :data:`schemas.reports.REPORTS`) as
    ``{"description": ..., "unit": ...}`` from the schemas, the one home of column
    definitions and units. Columns no schema defines are left out (and logged)."""
    from .schemas.reports import REPORTS

    spec = REPORTS.get(report)
    known = spec.columns() if spec is not None else {}
    out: dict[str, dict[str, str]] = {}
    for name in columns:
        description, unit = known.get(name, ("", None))
        if not description or unit is None:
            log.warning(
                "report %s: column %s has no description or unit in the schemas", report, name
            )
            continue
        out[name] = {"description": description, "unit": unit}
    return out


def write_parquet(
    frame: pl.DataFrame,
    path: Path,
    *,
    table: str,
    input_sha256: str,
    extra: dict[str, str] | None = None,
) -> None:
    """Write ``frame`` to ``path`` atomically with scalefit's key-value metadata.

    The file's metadata holds ``scalefit.columns``, a JSON object of each column's
    ``description`` and ``unit`` from the schemas (:func:`column_docs`), and each Arrow field
    carries the same two as its own ``description`` and ``unit`` metadata, for generic
    readers. ``extra`` adds ``scalefit.<key>`` entries (e.g. ``not_compared``).
    """
    arrow = frame.to_arrow()
    described = column_docs(table, frame.columns)
    fields = [
        f.with_metadata(
            {
                b"description": described[f.name]["description"].encode(),
                b"unit": described[f.name]["unit"].encode(),
            }
        )
        if f.name in described
        else f
        for f in arrow.schema
    ]
    meta = dict(arrow.schema.metadata or {})
    meta.update(
        {
            b"scalefit.version": scalefit.__version__.encode(),
            b"scalefit.created_at": dt.datetime.now(dt.UTC).isoformat().encode(),
            b"scalefit.table": table.encode(),
            b"scalefit.input_sha256": input_sha256.encode(),
            b"scalefit.rows": str(frame.height).encode(),
            b"scalefit.columns": json.dumps(described).encode(),
        }
    )
    for key, value in (extra or {}).items():
        meta[f"scalefit.{key}".encode()] = value.encode()
    schema = pa.schema(fields, metadata=meta)
    with atomic_path(path) as tmp:
        pq.write_table(pa.Table.from_batches(arrow.to_batches(), schema=schema), tmp)


def parquet_metadata(path: Path) -> dict[str, str]:
    """scalefit's key-value metadata of a report file."""
    raw = pq.read_schema(path).metadata or {}
    return {k.decode(): v.decode() for k, v in raw.items() if k.startswith(b"scalefit.")}


def input_hash(con: duckdb.DuckDBPyConnection) -> str:
    """A hash of what reports are made from: the curated load and every ingest and fit."""
    rows = store.run(
        con,
        "SELECT coalesce(string_agg(ingest_id || ':' || coalesce(sha256, ''), ',' "
        "ORDER BY ingest_id), '') FROM ingests WHERE status <> 'failed'",
    )
    fits = store.run(con, "SELECT coalesce(string_agg(fit_id, ',' ORDER BY fit_id), '') FROM fits")
    return hashlib.sha256(json.dumps([rows[0][0], fits[0][0]]).encode()).hexdigest()


def fit_parameters(fits: pl.DataFrame) -> pl.DataFrame:
    """The fits' estimates and intervals (JSON objects in the ``fits`` table), one typed row
    per fit and parameter (``FitParameterSchema``)."""
    from .schemas.reports import FitParameterSchema

    rows = []
    for fit in fits.iter_rows(named=True):
        low = json.loads(fit["ci_low"]) if fit["ci_low"] else {}
        high = json.loads(fit["ci_high"]) if fit["ci_high"] else {}
        for name, value in json.loads(fit["estimates"]).items():
            rows.append(
                {
                    "fit_id": fit["fit_id"],
                    "law_id": fit["law_id"],
                    "procedure": fit["procedure"],
                    "form": fit["form"],
                    "parameter": name,
                    "estimate": _float(value),
                    "ci_low": _float(low.get(name)),
                    "ci_high": _float(high.get(name)),
                    "confidence_level": fit["confidence_level"],
                }
            )
    schema = {n: c.dtype.type for n, c in FitParameterSchema.to_schema().columns.items()}
    return FitParameterSchema.validate(pl.DataFrame(rows, schema=schema, orient="row"))


def _float(value: str | float | None) -> float | None:
    """A JSON number as a float; None for null or non-finite text such as ``"NaN"``."""
    if value is None:
        return None
    number = float(value)
    return number if number == number and abs(number) != float("inf") else None


def laws_report(laws: pl.DataFrame, not_compared: dict[str, str]) -> pl.DataFrame:
    """Every law (``laws`` rows) with its parameters typed (a list of {name, value}), and
    whether it is in the comparisons or, from ``not_compared``, why not."""
    from .schemas.reports import LAW_PARAMETER_TYPE

    parameters = [
        [{"name": k, "value": float(v)} for k, v in json.loads(text).items()]
        for text in laws["parameters"].to_list()
    ]
    reasons = [not_compared.get(law_id) for law_id in laws["law_id"].to_list()]
    return laws.with_columns(
        pl.Series("parameters", parameters, dtype=LAW_PARAMETER_TYPE),
        pl.Series("in_comparisons", [r is None for r in reasons], dtype=pl.Boolean),
        pl.Series("not_compared_reason", reasons, dtype=pl.String),
    ).select(
        "law_id",
        "form",
        "origin",
        "parameters",
        "in_comparisons",
        "not_compared_reason",
        "source_id",
        "fit_id",
        "locator",
        "notes",
        "caveat",
    )


def write_reports(con: duckdb.DuckDBPyConnection, directory: Path = DEFAULT_REPORTS) -> ReportInfo:
    """Write every Parquet report and plot from the store into ``directory``.

    Parquet: ``models`` and ``fits`` (views of the store; the fits' estimates and intervals
    typed in ``fit_parameters``), ``laws`` (every law, its parameters typed, and why a law is
    not compared), ``comparisons`` (every model under every law that can allocate, recomputed
    here from the same laws as the frontier, so the two always agree) and ``frontier`` (each
    law's compute-optimal N, D, tokens per parameter and loss over a grid of C). Every column
    carries its description and unit (:func:`write_parquet`).
    Plots: ``tokens_vs_params.png`` (every model against every law's compute-optimal line,
    with the bootstrap bands of fitted laws and the laws' caveats); for each fitted law
    ``law_fit_<law_id>.png`` (the law against its data, as its procedure calls for) and
    ``bootstrap_<law_id>.png`` (its exponents' bootstrap distributions and estimates).
    """
    directory = Path(directory)
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ReportError(
            f"cannot write reports into {directory}: {exc.strerror or exc}; "
            "pass a folder (--out / --reports)"
        ) from None
    sha = input_hash(con)
    files: dict[str, int] = {}
    frames = {stem: store.query(con, sql) for stem, sql in REPORT_QUERIES.items()}
    laws = store.query(con, compare.LAWS_SQL)
    models = store.query(con, compare.MODELS_SQL)
    skipped = compare.not_compared(laws)
    frames["comparisons"] = compare.comparisons_view(models, laws).sort(
        "law_id", "family", "params", "model_id"
    )
    frames["frontier"] = compare.frontier(laws)
    frames["fit_parameters"] = fit_parameters(store.query(con, FITS_PARAMETERS_SQL))
    frames["laws"] = laws_report(store.query(con, LAWS_REPORT_SQL), skipped)
    extra = {"not_compared": json.dumps(skipped)}
    for stem, frame in frames.items():
        write_parquet(
            frame,
            directory / f"{stem}.parquet",
            table=stem,
            input_sha256=sha,
            extra=extra if stem in ("comparisons", "frontier") else None,
        )
        files[f"{stem}.parquet"] = frame.height
        log.info("wrote %s (%d rows)", directory / f"{stem}.parquet", frame.height)
    plot = directory / "tokens_vs_params.png"
    plots.plot_tokens_vs_params(
        frames["models"],
        frames["frontier"],
        plot,
        bands=_frontier_bands(con, frames["frontier"]),
        caveats=_caveats(con),
    )
    files[plot.name] = plot.stat().st_size
    files.update(_fit_plots(con, directory))
    return ReportInfo(directory=directory, files=files, not_compared=skipped)


FIT_POINTS_SQL = (
    "SELECT "
    + POINT_COLUMNS_SQL
    + """
    FROM fit_points p
    JOIN observations o ON o.run_id = p.run_id AND o.step = p.step AND o.metric = p.metric
    JOIN runs r ON r.run_id = p.run_id
    JOIN (SELECT run_id, metric, max(step) AS last_step FROM observations
          GROUP BY run_id, metric) last ON last.run_id = p.run_id AND last.metric = p.metric
    WHERE p.fit_id = ?
    ORDER BY r.run_id, o.step
"""
)
"""A fit's points, read again by their ids (the fit id bound as a parameter)."""


def _fit_points(
    con: duckdb.DuckDBPyConnection, fit_id: str, record: str | None
) -> pl.DataFrame | None:
    """The data a fit was made from, read again from its record (``fits.input``): by the
    points' ids in ``fit_points``, or from its file while the file still has the sha256
    recorded. None, with a log note, when they cannot be had; a fit saved before scalefit
    kept that record has only SQL text in ``selection``, which is never run."""
    from . import fit_store

    if record is None:
        log.warning(
            "fit %s: no record of its points (saved by an older scalefit, whose SQL text is "
            "never run); its data plot is skipped, refit to get one",
            fit_id,
        )
        return None
    info = json.loads(record)
    if info.get("source") == "store":
        return store.query(con, FIT_POINTS_SQL, [fit_id])
    path = Path(str(info.get("path", "")))
    if info.get("source") == "file" and path.is_file():
        if fit_store.file_input(path).get("sha256") == info.get("sha256"):
            return fit_store.read_points(path)
    log.warning("fit %s: its file %s is gone or changed; its data plot is skipped", fit_id, path)
    return None


def _caveats(con: duckdb.DuckDBPyConnection) -> dict[str, str]:
    """Law id -> ``laws.caveat``, for the laws that have one (shown in every plot of them)."""
    rows = store.run(con, "SELECT law_id, caveat FROM laws WHERE caveat IS NOT NULL")
    return {law_id: caveat for law_id, caveat in rows if caveat.strip()}


def _sample_laws(con: duckdb.DuckDBPyConnection, fit_id: str, form: str, law: Law) -> list[Law]:
    """One law per bootstrap resample of ``fit_id`` (``fit_samples``) with every parameter
    of ``law``; resamples missing one are left out."""
    from .laws import law_from_parameters

    names = [k for k, v in law.parameters().items() if v is not None]
    samples = store.query(
        con,
        "SELECT sample, parameter, value FROM fit_samples WHERE fit_id = ? "
        "AND list_contains(?, parameter) ORDER BY sample",
        [fit_id, names],
    )
    if samples.height == 0:
        return []
    wide = samples.pivot(on="parameter", index="sample", values="value").drop_nulls()
    if not all(n in wide.columns for n in names):
        return []
    return [law_from_parameters(form, {n: row[n] for n in names}) for row in wide.to_dicts()]


def _frontier_bands(con: duckdb.DuckDBPyConnection, frontier: pl.DataFrame) -> dict:
    """Law id -> the bootstrap band of its compute-optimal line over the frontier's compute
    grid, for every fitted law with samples in ``fit_samples``."""
    from .laws import law_from_parameters

    fitted = store.query(
        con,
        "SELECT l.law_id, l.form, l.parameters, l.fit_id, f.confidence_level FROM laws l "
        "JOIN fits f USING (fit_id) WHERE l.origin = 'fitted'",
    )
    bands = {}
    for row in fitted.iter_rows(named=True):
        grid = frontier.filter(pl.col("law_id") == row["law_id"])["flops"].to_numpy()
        if grid.size == 0:
            continue
        law = law_from_parameters(row["form"], json.loads(row["parameters"]))
        samples = _sample_laws(con, row["fit_id"], row["form"], law)
        if samples:
            level = row["confidence_level"] or 0.95
            bands[row["law_id"]] = plots.allocation_band(samples, grid, level)
    return bands


PROCEDURE_TITLES = {
    "chinchilla": "Chinchilla L(N, D) (approach 3, Huber in log space)",
    "isoflop": "IsoFLOP profiles (approach 2)",
    "envelope": "training-curve envelope (approach 1)",
}
"""How a fit is named in plot titles: by its procedure (``fits.procedure``), or for a
``parametric`` fit by its law form (``fits.form``; others: "<form> law")."""


def _fit_title(row: dict) -> str:
    """``law_id``: procedure, fitted to (the fit's data in words): a plot's title."""
    key = row["form"] if row["procedure"] == "parametric" else row["procedure"]
    procedure = PROCEDURE_TITLES.get(key, f"{key} law")
    data = row["selection"] or "its recorded input"
    if "points" not in data:
        data += f" ({row['n_points']} points)"
    return f"{row['law_id']}: {procedure}, fitted to {data}"


@dataclass(frozen=True)
class _FitLook:
    """What every plot of a fit shows beside its points and law."""

    title: str
    sample_laws: list[Law]
    level: float
    caveat: str | None


def _draw_fit(row: dict, points: pl.DataFrame, law: Law, path: Path, look: _FitLook) -> bool:
    """Draw the fit of ``row`` (a ``laws`` row joined to its ``fits`` row) as its procedure
    calls for; False when its law form has no data plot."""
    if row["procedure"] == "isoflop":
        plots.plot_isoflop_fit(
            points,
            law,
            path,
            title=look.title,
            sample_laws=look.sample_laws,
            level=look.level,
            caveat=look.caveat,
        )
    elif row["procedure"] == "envelope":
        plots.plot_envelope_fit(
            points,
            law,
            path,
            title=look.title,
            sample_laws=look.sample_laws,
            level=look.level,
            caveat=look.caveat,
        )
    elif isinstance(law, LossLaw) and row["form"] != "data_constrained":
        samples = [s for s in look.sample_laws if isinstance(s, LossLaw)]  # all: same form
        plots.plot_parametric_fit(
            points,
            law,
            path,
            title=look.title,
            sample_laws=samples,
            level=look.level,
            caveat=look.caveat,
        )
    else:
        log.info("fit %s (%s): no data plot for this law form", row["fit_id"], row["form"])
        return False
    return True


def _fit_plots(con: duckdb.DuckDBPyConnection, directory: Path) -> dict[str, int]:
    """For every fitted law, a plot of the law against its data drawn as its procedure
    calls for (``law_fit_<law_id>.png``: :func:`scalefit.plots.plot_parametric_fit` for
    loss laws, :func:`scalefit.plots.plot_isoflop_fit` for IsoFLOP fits,
    :func:`scalefit.plots.plot_envelope_fit` for envelope fits), and the bootstrap
    distributions of its exponents with the estimate (``bootstrap_<law_id>.png``)."""
    from .laws import law_from_parameters

    files: dict[str, int] = {}
    caveats = _caveats(con)
    fitted = store.query(
        con,
        "SELECT l.law_id, l.form, l.parameters, f.fit_id, f.procedure, f.input, "
        "f.selection, f.n_points, f.estimates, f.confidence_level FROM laws l "
        "JOIN fits f USING (fit_id) WHERE l.origin = 'fitted' ORDER BY l.law_id",
    )
    for row in fitted.iter_rows(named=True):
        law = law_from_parameters(row["form"], json.loads(row["parameters"]))
        title = _fit_title(row)
        level = row["confidence_level"] or 0.95
        samples = _sample_laws(con, row["fit_id"], row["form"], law)
        points = _fit_points(con, row["fit_id"], row["input"])
        path = directory / f"law_fit_{row['law_id']}.png"
        look = _FitLook(title, samples, level, caveats.get(row["law_id"]))
        if points is not None and points.height and _draw_fit(row, points, law, path, look):
            files[path.name] = path.stat().st_size
        exponents = store.query(
            con,
            "SELECT fit_id, sample, parameter, value FROM fit_samples WHERE fit_id = ? "
            "AND parameter IN ('alpha', 'beta', 'a', 'b', 'params_exp', 'tokens_exp')",
            [row["fit_id"]],
        )
        if exponents.height:
            path = directory / f"bootstrap_{row['law_id']}.png"
            plots.plot_bootstrap_exponents(
                exponents,
                path,
                title=title,
                estimates=json.loads(row["estimates"]),
                level=level,
            )
            files[path.name] = path.stat().st_size
    return files


SUMMARY_LAWS = ("rule_20_tokens_per_param", "besiroglu2024")
"""Laws shown in the comparisons summary by default: the rule of thumb and Besiroglu et al.'s
corrected approach-3 fit (the printed approach-3 constants are not their own optimum)."""


def comparisons_summary(
    con: duckdb.DuckDBPyConnection, law_ids: tuple[str, ...] | None = None
) -> list[dict]:
    """One row per model and law (default :data:`SUMMARY_LAWS`), rounded for reading."""
    law_ids = law_ids or SUMMARY_LAWS
    frame = store.query(
        con,
        "SELECT family, model, law_id, params, tokens, flops, flops_source, tokens_per_param, "
        "optimal_tokens_per_param, token_excess, size_ratio, tokens_per_param_ratio, "
        "loss_cost, predicted_loss, law_caveat "
        "FROM comparisons WHERE list_contains(?, law_id) ORDER BY law_id, family, params",
        [list(law_ids)],
    )
    return [
        {k: (round(v, 4) if isinstance(v, float) else v) for k, v in row.items()}
        for row in frame.to_dicts()
    ]


def _markdown_text(text: str | None) -> str:
    """``text`` as one literal markdown table cell (a predicate may hold `|` or backticks)."""
    cell = (text or "").replace("\\", "\\\\").replace("|", "\\|").replace("`", "\\`")
    return " ".join(cell.split())


def fits_markdown(con: duckdb.DuckDBPyConnection) -> str:
    """A markdown table of every fit: form (and procedure, where it is not ``parametric``),
    data, estimates with intervals, convergence."""
    fits = store.query(
        con,
        "SELECT fit_id, procedure, form, selection, n_points, estimates, ci_low, ci_high, "
        "objective, "
        "converged, n_bootstrap, created_at FROM fits ORDER BY created_at",
    )
    if fits.height == 0:
        return (
            "# scalefit fits\n\nNo fits yet: configure `[fit]` and log folders in `scalefit.toml`."
        )
    lines = [
        "# scalefit fits",
        "",
        "| fit | form | data | points | estimates (95% interval) | objective | converged |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in fits.iter_rows(named=True):
        est = json.loads(row["estimates"])
        low = json.loads(row["ci_low"]) if row["ci_low"] else {}
        high = json.loads(row["ci_high"]) if row["ci_high"] else {}
        cells = ", ".join(
            f"{k} = {v:.4g}" + (f" [{low[k]:.4g}, {high[k]:.4g}]" if k in low and k in high else "")
            for k, v in est.items()
        )
        form = row["form"]
        if row["procedure"] != "parametric":
            form += f" ({row['procedure']})"
        lines.append(
            f"| `{row['fit_id']}` | {form} | {_markdown_text(row['selection'])} | "
            f"{row['n_points']} | "
            f"{cells} | {row['objective']:.4g} | {'yes' if row['converged'] else 'NO'} |"
        )
    return "\n".join(lines) + "\n"
