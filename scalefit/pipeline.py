"""The refresh pipeline's steps, each a plain function of paths that opens the store itself.

The Prefect flow (``scalefit.flows.refresh``) and the CLI call these same functions; each
step holds the DuckDB file only while it works, so other processes (a reader running
``scalefit sql``, an ingest) get their turn between steps.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypedDict

from . import compare, fit_store, report, store, study_reports, user_sql
from . import fit as fitting
from .errors import FitError
from .load import curated, studies, upstream
from .load import logs as ingest

log = logging.getLogger(__name__)


class RefreshSteps(TypedDict, total=False):
    """Each step's result in a refresh (:attr:`RefreshInfo.steps`); a step that failed as a
    whole (the study reports) is missing, and named in :attr:`RefreshInfo.errors`."""

    load_curated: curated.CuratedLoadInfo
    upstreams: list[upstream.UpstreamInfo]
    studies: list[studies.StudyStatus]
    ingest: dict[str, ingest.IngestReport]
    """By log folder."""
    fits: dict[str, FitInfo]
    """By ``project/law``."""
    comparisons: int
    """Rows of the ``comparisons`` view."""
    reports: report.ReportInfo
    reproductions: study_reports.StudyReportInfo


@dataclass(frozen=True, slots=True)
class RefreshInfo:
    """What a refresh did: per-step results, table counts before and after, and errors.

    A step that failed (one log folder, one upstream source, one fit) is listed in
    :attr:`errors` while the others' work is kept.
    """

    db_path: Path
    reports_dir: Path
    counts_before: dict[str, int]
    counts_after: dict[str, int]
    steps: RefreshSteps = field(default_factory=lambda: RefreshSteps())
    errors: dict[str, str] = field(default_factory=dict)

    @property
    def changes(self) -> dict[str, int]:
        """Row-count change per table (only tables that changed)."""
        return {
            t: self.counts_after[t] - self.counts_before.get(t, 0)
            for t in self.counts_after
            if self.counts_after[t] != self.counts_before.get(t, 0)
        }

    @property
    def ok(self) -> bool:
        """True when every step succeeded."""
        return not self.errors

    def summary(self) -> str:
        """A few lines saying what changed, for logs and the CLI."""
        changed = ", ".join(f"{t} {d:+d}" for t, d in self.changes.items()) or "no table changed"
        lines = [f"refresh of {self.db_path}: {changed}"]
        lines += [f"error in {step}: {message}" for step, message in self.errors.items()]
        return "\n".join(lines)


def table_counts(db_path: Path) -> dict[str, int]:
    """Row count of every table (creating the store if it does not exist yet)."""
    with store.connect(db_path) as con:
        return store.table_counts(con)


def load_curated(db_path: Path, datasets_dir: Path | None = None) -> curated.CuratedLoadInfo:
    """Validate the curated datasets and load them (skipped when unchanged)."""
    data = curated.read_curated(datasets_dir)
    with store.connect(db_path) as con:
        return curated.load_curated(con, data)


def refresh_upstreams(
    db_path: Path,
    datasets_dir: Path | None = None,
    cache_dir: Path | None = None,
    offline: bool = False,
) -> list[upstream.UpstreamInfo]:
    """Download (or take from the cache) every upstream source and load it.

    ``offline=False`` still honours ``SCALEFIT_OFFLINE=1`` from the environment.
    """
    return upstream.refresh_upstreams(
        db_path, datasets_dir, cache_dir, offline=True if offline else None
    )


def ingest_folder(db_path: Path, folder: Path, project: str | None = None) -> ingest.IngestReport:
    """Ingest every log file in ``folder`` (unchanged files are skipped by hash)."""
    return ingest.ingest_paths(db_path, [folder], project=project)


@dataclass(frozen=True, slots=True)
class FitInfo:
    """One scheduled fit: which project and law, and what came of it.

    ``status`` is ``fitted``, ``unchanged`` (same data and settings as the stored fit) or
    ``skipped`` (the data cannot support the law, e.g. fewer points than parameters; the
    reason is in ``message``).
    """

    project: str
    law: str
    status: str
    message: str
    fit_id: str | None = None
    law_id: str | None = None


def fit_projects(db_path: Path, where: str = "") -> list[str]:
    """Projects with runs matching ``where`` (a SQL predicate on ``runs``; "" for all).

    Each project is fitted on its own: runs of different projects (a paper's sweep, your
    model family) come from different data and tokenizers and need not share a law.
    """
    with user_sql.connect_locked(db_path) as con:
        # The predicate (a user's SQL) is checked and evaluated on the locked connection;
        # only the ids it selects are used from here on.
        ids = user_sql.run_ids_where(con, where)
        if ids is None:
            rows = store.run(con, "SELECT DISTINCT project FROM runs ORDER BY 1")
        else:
            rows = store.run(
                con,
                "SELECT DISTINCT project FROM runs "
                "WHERE run_id IN (SELECT unnest(?::VARCHAR[])) ORDER BY 1",
                [ids],
            )
    return [r[0] for r in rows]


def fitted_law_id(project: str, law: str) -> str:
    """The stable ``laws.law_id`` of a scheduled fit, e.g. ``fitted_sweep_chinchilla``."""
    slug = "".join(c if c.isalnum() else "_" for c in project.lower()).strip("_")
    return f"fitted_{slug}_{law.replace('-', '_')}"


def fit_project(
    db_path: Path,
    project: str,
    law: str,
    *,
    where: str = "",
    n_bootstrap: int = 200,
    seed: int = 0,
    resample: str = "runs",
    points: str = "final",
    bootstrap_jobs: int = 1,
    bootstrap_map: fitting.BootstrapMap = map,
) -> FitInfo:
    """Fit ``law`` to the observations of ``project``'s runs that ``points`` selects (``[fit]
    points``: each run's final one by default) and save it.

    ``bootstrap_jobs`` and ``bootstrap_map`` say how the bootstrap refits are split and
    where they run (:func:`scalefit.fit.fit_law`); the result does not depend on them.

    The store is read, then released while fitting (a bootstrap can take seconds), then
    written in one transaction. Refitting unchanged data with unchanged settings writes
    nothing new (the fit id is derived from both).
    """
    with user_sql.connect_locked(db_path) as con:
        selection = fit_store.select_runs(con, where=where, project=project, points=points)
    for message in selection.warnings:
        log.warning("fit of %s to project %s: %s", law, project, message)
    try:
        result = fitting.fit_named(
            selection.points,
            law,
            n_bootstrap=n_bootstrap,
            seed=seed,
            resample=resample,
            bootstrap_jobs=bootstrap_jobs,
            bootstrap_map=bootstrap_map,
        )
    except FitError as exc:
        why = str(exc) + (f" (left out: {selection.left_out()})" if selection.left_out() else "")
        log.warning("fit of %s to project %s skipped: %s", law, project, why)
        return FitInfo(project, law, "skipped", why)
    result = fit_store.with_selection(result, selection)
    law_id = fitted_law_id(project, law)
    with store.connect(db_path) as con:
        # Same data and settings give the same fit id: if the law already points to it,
        # there is nothing to write (re-saving would only move `created_at`), unless an
        # older scalefit saved it without the record of its points (`input`).
        current = store.run(
            con,
            "SELECT 1 FROM laws l JOIN fits f USING (fit_id) WHERE l.law_id = ? "
            "AND f.fit_id = ? AND f.input IS NOT NULL",
            [law_id, result.fit_id],
        )
        if not current:
            record = fit_store.store_input(selection, predicate=where, project=project)
            fit_store.save_fit(con, result, input=record, points=selection.points, law_id=law_id)
    status = "unchanged" if current else "fitted"
    message = f"{result.n_points} points; objective {result.objective:.4g}" + (
        "" if result.converged else "; NOT converged (see fits.diagnostics)"
    )
    return FitInfo(project, law, status, message, result.fit_id, law_id)


def refresh_comparisons(db_path: Path) -> int:
    """Recompute every model x law comparison; returns the number of rows."""
    with store.connect(db_path) as con:
        return compare.refresh_comparisons(con)


def write_reports(db_path: Path, reports_dir: Path) -> report.ReportInfo:
    """Write the Parquet reports and plots from the store.

    The store is brought up to date first (tables and columns added), then read on a
    locked read-only connection."""
    with store.connect(db_path):
        pass
    with user_sql.connect_locked(db_path) as con:
        return report.write_reports(con, reports_dir)


def compare_and_report(db_path: Path, reports_dir: Path) -> tuple[int, report.ReportInfo]:
    """:func:`refresh_comparisons`, then :func:`write_reports`: one step of the refresh (the
    reports read the comparisons just written); returns both results."""
    return refresh_comparisons(db_path), write_reports(db_path, reports_dir)


def comparisons_table(db_path: Path, law_ids: tuple[str, ...] | None = None) -> list[dict]:
    """The comparisons as rows of plain values, for a Prefect table artifact."""
    with store.connect(db_path, read_only=True) as con:
        return report.comparisons_summary(con, law_ids)


def fits_markdown(db_path: Path) -> str:
    """A markdown summary of the fits in the store, for a Prefect markdown artifact."""
    with store.connect(db_path, read_only=True) as con:
        return report.fits_markdown(con)


def load_studies(
    db_path: Path,
    datasets_dir: Path | None = None,
    mirror: Path | None = None,
    cache_dir: Path | None = None,
    offline: bool = False,
) -> list[studies.StudyStatus]:
    """Load every declared study (:func:`scalefit.load.studies.load_all`); one failure does not
    stop the others. ``offline=False`` still honours ``SCALEFIT_OFFLINE=1``."""
    with store.connect(db_path) as con:
        return studies.load_all(
            con,
            datasets_dir,
            mirror=mirror,
            cache_dir=cache_dir,
            offline=True if offline else None,
        )


def write_study_reports(
    db_path: Path,
    reports_dir: Path,
    n_bootstrap: int = 100,
    seed: int = 0,
    datasets_dir: Path | None = None,
) -> study_reports.StudyReportInfo:
    """Reproduce the loaded studies and write their reports (see
    :func:`scalefit.study_reports.write_study_reports`)."""
    with store.connect(db_path) as con:
        return study_reports.write_study_reports(
            con, reports_dir, n_bootstrap=n_bootstrap, seed=seed, datasets_dir=datasets_dir
        )
