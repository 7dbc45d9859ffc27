"""The ``refresh`` flow: curated data, upstream sources, log folders, fits, comparisons,
reports, artifacts.

Each task is a plain ``scalefit.pipeline`` function; this file only names, orders and retries
them. The fits run in a ``fit-laws`` subflow so that its task runner, where the bootstrap jobs
go (threads or a Dask cluster), is chosen per run from ``[scale]`` in ``scalefit.toml``.

Run it with ``scalefit refresh`` (Prefect's ephemeral mode: no server to start), on a schedule
with ``scalefit serve``, or as the deployment in ``prefect.yaml``.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

from prefect import Task, flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE
from prefect.task_runners import TaskRunner, ThreadPoolTaskRunner

from scalefit import fit as fitting
from scalefit import pipeline, store
from scalefit.config import Settings, load_settings

# Steps write to the store, so none is cached. I/O steps retry once on a transient fault
# (another process holding the DuckDB file past the store's own bounded wait, a full disk, a
# download). A task run costs Prefect bookkeeping (API calls, events): reads that take
# milliseconds (table counts, the list of projects, the artifacts' contents) are plain calls
# in the flow, not tasks, and the comparisons and the reports are one task.
P = ParamSpec("P")
R = TypeVar("R")


def _io_task(name: str, fn: Callable[P, R]) -> Task[P, R]:
    """``fn`` as an I/O task ``name``: never cached, retried once after 5 s."""
    return task(name=name, retries=1, retry_delay_seconds=5, cache_policy=NO_CACHE)(fn)


load_curated = _io_task("load_curated", pipeline.load_curated)
refresh_upstreams = _io_task("refresh_upstreams", pipeline.refresh_upstreams)
load_studies = _io_task("load_studies", pipeline.load_studies)
ingest_logs = _io_task("ingest_logs", pipeline.ingest_folder)
fit_law = _io_task("refit_laws", pipeline.fit_project)
compare_and_report = _io_task("compare_and_report", pipeline.compare_and_report)
write_study_reports = _io_task("write_study_reports", pipeline.write_study_reports)


def map_on_task_runner(
    fn: Callable[[fitting.BootstrapJob], fitting.BootstrapRefits],
    jobs: Iterable[fitting.BootstrapJob],
) -> list[fitting.BootstrapRefits]:
    """A :data:`scalefit.fit.BootstrapMap` that runs each job as a ``bootstrap_job`` task on
    the current flow's task runner (threads, or a Dask cluster), in order. A job is pure
    computation with no store access: safe to run on any worker, in any process."""
    job_task = task(name="bootstrap_job", cache_policy=NO_CACHE)(fn)
    return [future.result() for future in job_task.map(list(jobs))]


def task_runner_for(settings: Settings) -> TaskRunner[Any]:
    """The task runner the ``[scale]`` settings ask for (see ``scalefit.config``).

    Its future type is left open: the thread pool's (``PrefectConcurrentFuture``) and Dask's
    (``PrefectDaskFuture``) differ, and ``Flow.with_options`` takes a
    ``TaskRunner[PrefectFuture[Any]]`` whose future type is invariant."""
    workers = settings.workers or os.cpu_count() or 1
    if settings.task_runner == "dask":
        from prefect_dask import DaskTaskRunner  # the `dask` extra; checked by load_settings

        if settings.dask_address:
            return DaskTaskRunner(address=settings.dask_address)
        return DaskTaskRunner(
            cluster_kwargs={
                "n_workers": workers,
                "threads_per_worker": 1,
                "processes": True,
                "dashboard_address": None,
            }
        )
    return ThreadPoolTaskRunner(max_workers=workers)


def _run_each(
    step: str,
    calls: dict[str, tuple[Any, ...]],
    fn: Task[..., R],
    errors: dict[str, str],
    **kwargs: Any,
) -> dict[str, R]:
    """Run ``fn`` once per item; a failed item is recorded in ``errors``, the rest go on."""
    results: dict[str, R] = {}
    for name, args in calls.items():
        state = fn(*args, **kwargs, return_state=True)
        if state.is_failed():
            errors[f"{step}:{name}"] = str(state.message or "failed")
        else:
            results[name] = state.result()
    return results


@flow(name="fit-laws", log_prints=False, validate_parameters=False)
def fit_laws(
    fit_runs: dict[str, tuple[Path, str, str]],
    where: str,
    n_bootstrap: int,
    seed: int,
    resample: str,
    jobs: int,
    points: str = "final",
) -> tuple[dict[str, pipeline.FitInfo], dict[str, str]]:
    """Fit and save each (project, law); bootstrap jobs run on this flow's task runner.

    Returns the results by name and the errors of the fits that failed.
    """
    errors: dict[str, str] = {}
    results = _run_each(
        "fit",
        fit_runs,
        fit_law,
        errors,
        where=where,
        n_bootstrap=n_bootstrap,
        seed=seed,
        resample=resample,
        points=points,
        bootstrap_jobs=jobs,
        bootstrap_map=map_on_task_runner,
    )
    return results, errors


def _loads(
    settings: Settings, datasets_dir: Path | None, errors: dict[str, str]
) -> pipeline.RefreshSteps:
    """The loading steps: curated data, upstream sources, studies, log folders."""
    db = settings.db
    curated = load_curated(db, datasets_dir)
    upstreams = refresh_upstreams(db, datasets_dir, settings.cache, settings.offline)
    studies = load_studies(db, datasets_dir, settings.mirror, settings.cache, settings.offline)
    for u in upstreams:
        _note_status("upstream", u.upstream, u.status, u.message, errors)
    for s in studies:
        _note_status("study", s.study, s.status, s.message, errors)
    ingests = _run_each(
        "ingest",
        {str(folder): (db, folder, settings.project) for folder in settings.log_folders},
        ingest_logs,
        errors,
    )
    return {
        "load_curated": curated,
        "upstreams": upstreams,
        "studies": studies,
        "ingest": ingests,
    }


def _note_status(kind: str, name: str, status: str, message: str, errors: dict[str, str]) -> None:
    """An upstream's or a study's error recorded in ``errors``; its warning logged."""
    if status == "error":
        errors[f"{kind}:{name}"] = message
    elif status == "warning":
        get_run_logger().warning("%s %s: %s", kind, name, message)


def _fits(settings: Settings, errors: dict[str, str]) -> dict[str, pipeline.FitInfo]:
    """The scheduled fits, in the ``fit-laws`` subflow (none: no subflow run)."""
    fit_runs = {
        f"{project}/{law}": (settings.db, project, law)
        for project in pipeline.fit_projects(settings.db, settings.fit_where)
        for law in settings.fit_laws
    }
    if not fit_runs:
        return {}
    # A subflow, so that its task runner (where the bootstrap jobs go) comes from the
    # settings of this run, not from the decorator.
    fit_stage = fit_laws.with_options(task_runner=task_runner_for(settings))
    state = fit_stage(
        fit_runs,
        where=settings.fit_where,
        n_bootstrap=settings.bootstrap,
        seed=settings.seed,
        resample=settings.resample,
        jobs=settings.jobs,
        points=settings.fit_points,
        return_state=True,
    )
    if state.is_failed():  # e.g. a local Dask cluster could not start: keep the rest
        errors["fit"] = str(state.message or "the fit-laws subflow failed")
        return {}
    fits, fit_errors = state.result()
    errors.update(fit_errors)
    for name, result in fits.items():
        if result.status == "skipped":
            get_run_logger().warning("fit %s skipped: %s", name, result.message)
    return fits


def _reports(
    settings: Settings,
    datasets_dir: Path | None,
    steps: pipeline.RefreshSteps,
    errors: dict[str, str],
) -> None:
    """Comparisons, reports, study reproductions, and the two artifacts."""
    db = settings.db
    steps["comparisons"], steps["reports"] = compare_and_report(db, settings.reports)
    state = write_study_reports(
        db, settings.reports, settings.bootstrap, settings.seed, datasets_dir, return_state=True
    )
    if state.is_failed():
        errors["reproductions"] = str(state.message or "failed")
    else:
        steps["reproductions"] = state.result()
    create_table_artifact(
        key="scalefit-comparisons",
        table=pipeline.comparisons_table(db),
        description="Published models against the 20 tokens/param rule and Hoffmann et al. "
        "approach 3 (all laws: the `comparisons` view).",
    )
    create_markdown_artifact(key="scalefit-fits", markdown=pipeline.fits_markdown(db))


@flow(name="refresh", log_prints=False)
def refresh(
    config_path: Path | None = None,
    db_path: Path | None = None,
    reports_dir: Path | None = None,
    datasets_dir: Path | None = None,
    log_folders: list[Path] | None = None,
    offline: bool | None = None,
) -> pipeline.RefreshInfo:
    """Bring the store and the reports up to date from ``scalefit.toml``; returns what changed.

    Arguments given here override the settings (``SCALEFIT_*`` variables, then the config
    file, ``./scalefit.toml`` by default, whose defaults apply when it is absent).
    """
    settings = load_settings(
        config_path,
        options={
            "db": ("db_path", db_path),
            "reports": ("reports_dir", reports_dir),
            "log_folders": ("log_folders", log_folders),
            "offline": ("offline", offline),
        },
    )
    store.use_storage_version(settings.storage_version)
    errors: dict[str, str] = {}
    before = pipeline.table_counts(settings.db)
    steps = _loads(settings, datasets_dir, errors)
    steps["fits"] = _fits(settings, errors)
    _reports(settings, datasets_dir, steps, errors)
    info = pipeline.RefreshInfo(
        db_path=Path(settings.db),
        reports_dir=Path(settings.reports),
        counts_before=before,
        counts_after=pipeline.table_counts(settings.db),
        steps=steps,
        errors=errors,
    )
    get_run_logger().info(info.summary())
    return info
