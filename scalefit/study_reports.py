"""The studies' reports: ``reproductions.parquet``, a plot per study, ``overtraining.parquet``.

Written from the store by :func:`write_study_reports` (the refresh's step). Each file carries
scalefit's Parquet metadata (:func:`scalefit.report.write_parquet`); its ``input_sha256`` is a
hash of the loaded studies' declarations, the curated models and the settings, and a file whose
metadata already has the same hash is left as it is: a second refresh changes nothing.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl

from . import overtraining, plots, report, store
from . import reproduce as rep
from .load.studies import load_studies

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class StudyReportInfo:
    """What :func:`write_study_reports` did."""

    directory: Path
    studies: tuple[str, ...]
    """Studies reproduced (those with runs in the store)."""
    files: dict[str, int] = field(default_factory=dict)
    """File -> rows (Parquet) or bytes (plots), for the files (re)written."""
    unchanged: bool = False
    """True when every report was already up to date (nothing written)."""
    reproductions: pl.DataFrame | None = None
    skipped: dict[str, str] = field(default_factory=dict)
    """Study -> why it was not reproduced (not loaded, no reproduction)."""


def _loaded_studies(con: Any, datasets_dir: Path | None) -> tuple[list[Any], dict[str, str]]:
    loaded, skipped = [], {}
    for study in load_studies(datasets_dir).values():
        if study.name not in rep.REPRODUCTIONS:
            skipped[study.name] = "no reproduction registered"
            continue
        rows = store.run(
            con,
            "SELECT count(*) FROM runs WHERE starts_with(run_id, ?) AND ingest_id = ?",
            [f"{study.name}:", study.ingest_id],
        )[0][0]
        if rows:
            loaded.append(study)
        else:
            skipped[study.name] = "not loaded (no mirror, cache or network?)"
    return loaded, skipped


def _input_sha256(con: Any, studies: list[Any], n_bootstrap: int, seed: int) -> str:
    models = store.run(
        con,
        "SELECT coalesce(string_agg(model_id || ':' || params || ':' || tokens, ',' "
        "ORDER BY model_id), '') FROM models WHERE params IS NOT NULL AND tokens IS NOT NULL",
    )[0][0]
    blob = {
        "studies": [s.declaration_sha256() for s in studies],
        "settings": rep.settings_sha256(n_bootstrap, seed),
        "models": hashlib.sha256(models.encode()).hexdigest(),
    }
    return hashlib.sha256(json.dumps(blob, sort_keys=True).encode()).hexdigest()


def _current(path: Path, sha: str) -> bool:
    try:
        return report.parquet_metadata(path).get("scalefit.input_sha256") == sha
    except (OSError, ValueError):
        return False


def write_study_reports(
    con: Any,
    directory: Path,
    *,
    n_bootstrap: int = 100,
    seed: int = 0,
    datasets_dir: Path | None = None,
) -> StudyReportInfo:
    """Reproduce every loaded study and write ``reproductions.parquet``, one
    ``reproduction_<study>.png`` per study and ``overtraining.parquet`` into ``directory``.

    Studies that are not loaded are skipped (listed in the result). Nothing is written when
    the reports' input hash is unchanged.
    """
    directory = Path(directory)
    studies, skipped = _loaded_studies(con, datasets_dir)
    sha = _input_sha256(con, studies, n_bootstrap, seed)
    target = directory / "reproductions.parquet"
    plot_names = [f"reproduction_{s.name}.png" for s in studies]
    over = directory / "overtraining.parquet"
    gadre = any(s.name == "gadre2024" for s in studies)
    if (
        _current(target, sha)
        and all((directory / p).is_file() for p in plot_names)
        and (not gadre or _current(over, sha))
    ):
        frame = pl.read_parquet(target)
        return StudyReportInfo(directory, tuple(s.name for s in studies), {}, True, frame, skipped)
    files: dict[str, int] = {}
    frames = []
    for study in studies:
        log.info("reproducing %s", study.name)
        result = rep.reproduce(con, study, n_bootstrap=n_bootstrap, seed=seed)
        frames.append(result.frame())
        plot = directory / f"reproduction_{study.name}.png"
        directory.mkdir(parents=True, exist_ok=True)
        plots.plot_observed_vs_predicted(
            result.plot,
            f"{study.name}: observed vs predicted loss (held-out runs marked)",
            plot,
        )
        files[plot.name] = plot.stat().st_size
    from .schemas.studies import ReproductionSchema

    frame = (
        pl.concat(frames, how="vertical_relaxed")
        if frames
        else rep.Reproduction("", [], pl.DataFrame()).frame()
    )
    if frames:
        ReproductionSchema.validate(frame)
    report.write_parquet(frame, target, table="reproductions", input_sha256=sha)
    files[target.name] = frame.height
    if gadre:
        points = rep.gadre_points(con)
        fits = overtraining.fit_testbed(points, n_bootstrap=n_bootstrap, seed=seed)
        costs = overtraining.overtraining_costs(overtraining.curated_models(con), fits)
        report.write_parquet(costs, over, table="overtraining", input_sha256=sha)
        files[over.name] = costs.height
    return StudyReportInfo(directory, tuple(s.name for s in studies), files, False, frame, skipped)


__all__ = ["StudyReportInfo", "write_study_reports"]
