"""Bootstrap refits spread over jobs: threads, processes, Prefect task runners, a Dask cluster.

Splitting the resamples into jobs, and where the jobs run, must not change a single sample.
"""

from __future__ import annotations

import re
import warnings
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from scalefit import fit as fitting
from scalefit import store
from scalefit.config import load_settings
from scalefit.errors import ConfigError
from scalefit.fit import fit_data_constrained
from scalefit.laws import (
    chinchilla_loss,
    data_constrained_loss,
    kaplan_joint_loss,
    power_law_loss,
)

TRUTH = {"E": 1.69, "A": 406.4, "B": 410.7, "alpha": 0.34, "beta": 0.28}


def _points(n: int = 120, seed: int = 3, law: str = "chinchilla") -> pl.DataFrame:
    """``n`` noisy points of a known law of the form ``law``: data that identify it (on
    data that barely do, rounding alone can move a refit along the flat direction)."""
    rng = np.random.default_rng(seed)
    params = np.exp(rng.uniform(np.log(1e7), np.log(1e10), n))
    tokens = np.exp(rng.uniform(np.log(1e8), np.log(1e11), n))
    if law == "chinchilla":
        clean = chinchilla_loss(params, tokens, *TRUTH.values())
    elif law == "kaplan_n_e":
        clean = power_law_loss(params, 3e7, 0.3, 1.5)
    else:  # Kaplan et al. (2020) Eq. (1.5) constants
        clean = kaplan_joint_loss(params, tokens, 8.8e13, 0.076, 5.4e13, 0.095)
    loss = clean * np.exp(rng.normal(0, 0.01, n))
    return pl.DataFrame({"params": params, "tokens": tokens, "loss": loss})


def _same_samples(a: fitting.LawFit, b: fitting.LawFit) -> None:
    assert a.fit_id == b.fit_id  # where the jobs ran is not part of the fit's identity
    assert a.samples.shape == b.samples.shape and a.samples.shape[0] > 0
    np.testing.assert_allclose(a.samples, b.samples, rtol=1e-9, equal_nan=True)
    assert a.ci.keys() == b.ci.keys()
    for name, interval in a.ci.items():
        assert interval == pytest.approx(b.ci[name], rel=1e-9), name


@pytest.mark.parametrize("law", ["chinchilla", "kaplan_n_e", "kaplan_nd"])
def test_jobs_and_where_they_run_do_not_change_the_samples(law: str) -> None:
    data = _points(law=law)
    with warnings.catch_warnings():
        warnings.simplefilter("error", fitting.ConvergenceWarning)
        serial = fitting.fit_law(data, law=law, n_bootstrap=300, seed=5)
        split = fitting.fit_law(data, law=law, n_bootstrap=300, seed=5, bootstrap_jobs=7)
        # Threads share one objective (and its scratch buffers): they must not collide.
        with ThreadPoolExecutor(3) as pool:
            threads = fitting.fit_law(
                data, law=law, n_bootstrap=300, seed=5, bootstrap_jobs=3, bootstrap_map=pool.map
            )
        # Processes get pickled jobs (the kaplan_nd model is a partial, not a closure).
        with ProcessPoolExecutor(2) as pool:
            processes = fitting.fit_law(
                data, law=law, n_bootstrap=300, seed=5, bootstrap_jobs=2, bootstrap_map=pool.map
            )
    for other in (split, threads, processes):
        _same_samples(serial, other)


def test_data_constrained_jobs_pickle_and_agree() -> None:
    n, d, u = (
        g.ravel()
        for g in np.meshgrid(
            np.geomspace(1e7, 2e9, 4), np.geomspace(1e9, 1e11, 3), np.geomspace(3e8, 1e11, 3)
        )
    )
    loss = data_constrained_loss(n, d, u, 1.87, 520.8, 1487.7, 0.35, 0.35, 15.39, 5.31)
    noisy = loss * np.exp(np.random.default_rng(0).normal(0, 0.005, loss.size))
    data = {"params": n, "tokens": d, "unique_tokens": u, "loss": noisy}
    kwargs = {"n_bootstrap": 24, "seed": 2, "starts": [[6, 7, 0.5, 0.4, 0.4, 2.0, 2.0]]}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", fitting.ConvergenceWarning)
        serial = fit_data_constrained(data, **kwargs)
        with ProcessPoolExecutor(2) as pool:
            spread = fit_data_constrained(data, **kwargs, bootstrap_jobs=2, bootstrap_map=pool.map)
    _same_samples(serial, spread)


def test_a_map_that_loses_jobs_is_an_error() -> None:
    def lossy(fn, jobs):
        return [fn(job) for job in jobs][:-1]

    with pytest.raises(RuntimeError, match="2 results for 3 jobs"):
        fitting.fit_law(_points(30), n_bootstrap=9, bootstrap_jobs=3, bootstrap_map=lossy)
    with pytest.raises(ValueError, match="bootstrap_jobs"):
        fitting.fit_law(_points(30), n_bootstrap=9, bootstrap_jobs=0)


def test_more_jobs_than_resamples_is_fine() -> None:
    data = _points(30)
    few = fitting.fit_law(data, n_bootstrap=3, bootstrap_jobs=10, starts=[[5, 5, 0, 0.5, 0.5]])
    one = fitting.fit_law(data, n_bootstrap=3, starts=[[5, 5, 0, 0.5, 0.5]])
    _same_samples(one, few)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ('task_runner = "ray"', "task_runner = 'ray' is not valid: allowed: one of threads, dask"),
        ("jobs = 0", "[scale] jobs = 0 is not valid: allowed: a whole number from 1 to 1024"),
        ("workers = -1", "[scale] workers = -1 is not valid: allowed: a whole number from 0"),
        ('dask_address = "tcp://127.0.0.1:1"', 'needs [scale] task_runner = "dask"'),
        ('jobs = "4"', "[scale] jobs = '4' is not valid: allowed: a whole number"),
    ],
)
def test_bad_scale_settings_are_named(tmp_path: Path, body: str, message: str) -> None:
    path = tmp_path / "scalefit.toml"
    path.write_text(f"[scale]\n{body}\n")
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_settings(path)


# --------------------------------------------------------------------- the refresh flow


def _sweep_folder(root: Path) -> Path:
    """A log folder with a 30-run sweep (one final loss per run) of a known law."""
    rng = np.random.default_rng(11)
    rows = []
    for i, n in enumerate(np.logspace(7.5, 9.5, 6)):
        for j, d in enumerate(np.logspace(8.5, 10.5, 5)):
            loss = chinchilla_loss(n, d, *TRUTH.values()) * np.exp(rng.normal(0, 0.01))
            rows.append({"run_id": f"r{i}_{j}", "step": 1, "tokens": d, "loss": loss, "params": n})
    folder = root / "logs"
    folder.mkdir()
    pl.DataFrame(rows).write_csv(folder / "sweep.csv")
    return folder


def _refresh(root: Path, logs: Path, scale: str):
    from scalefit.flows.refresh import refresh

    root.mkdir()
    config = root / "scalefit.toml"
    config.write_text(
        f'[ingest]\nfolders = ["{logs}"]\nproject = "sweep"\n'
        f"[fit]\nbootstrap = 40\nseed = 4\n[scale]\n{scale}\n"
    )
    info = refresh(config_path=config, db_path=root / "sf.duckdb", reports_dir=root / "out")
    assert info.ok, info.errors
    assert info.steps["fits"]["sweep/chinchilla"].status == "fitted"
    with store.connect(root / "sf.duckdb", read_only=True) as con:
        return store.query(con, "SELECT * FROM fit_samples ORDER BY sample, parameter")


def _bootstrap_task_runs(flow_name: str = "fit-laws") -> list[str]:
    """Names of the bootstrap task runs of the most recent ``fit-laws`` flow run."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        FlowFilter,
        FlowFilterName,
        FlowRunFilter,
        FlowRunFilterId,
    )
    from prefect.client.schemas.sorting import FlowRunSort

    with get_client(sync_client=True) as client:
        (run,) = client.read_flow_runs(
            flow_filter=FlowFilter(name=FlowFilterName(any_=[flow_name])),
            sort=FlowRunSort.START_TIME_DESC,
            limit=1,
        )
        tasks = client.read_task_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[run.id]))
        )
    return sorted(t.name for t in tasks if t.name.startswith("bootstrap_job"))


def _same_rows(samples: pl.DataFrame, expected: pl.DataFrame) -> None:
    """The same fit and samples; values equal up to rounding (jobs batch rows differently)."""
    assert samples.drop("value").equals(expected.drop("value"))
    np.testing.assert_allclose(samples["value"].to_numpy(), expected["value"].to_numpy(), rtol=1e-9)


@pytest.mark.slow
def test_refresh_spreads_the_bootstrap_over_threads_and_a_dask_cluster(
    prefect_harness, tmp_path: Path
) -> None:
    pytest.importorskip("prefect_dask")
    from distributed import Client, LocalCluster

    logs = _sweep_folder(tmp_path)
    serial = _refresh(tmp_path / "serial", logs, "jobs = 1")
    assert len(_bootstrap_task_runs()) == 1
    assert serial.select("sample").n_unique() == 40

    threads = _refresh(tmp_path / "threads", logs, 'task_runner = "threads"\njobs = 4\nworkers = 2')
    assert len(_bootstrap_task_runs()) == 4
    _same_rows(threads, serial)

    # A cluster the user started (the documented `dask_address`), with worker processes.
    with (
        LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
        ) as cluster,
        Client(cluster) as client,
    ):
        address = cluster.scheduler_address
        on_cluster = _refresh(
            tmp_path / "dask", logs, f'task_runner = "dask"\njobs = 3\ndask_address = "{address}"'
        )
        ran = client.run_on_scheduler(
            lambda dask_scheduler: {
                name: dict(prefix.state_counts)
                for name, prefix in dask_scheduler.task_prefixes.items()
            }
        )
    assert len(_bootstrap_task_runs()) == 3
    # Each job was a task on the cluster's workers, and its result came back.
    assert ran["run_bootstrap_job"]["memory"] == 3, ran
    np.testing.assert_allclose(
        on_cluster["value"].to_numpy(), serial["value"].to_numpy(), rtol=1e-9
    )
    assert on_cluster.drop("value").equals(serial.drop("value"))


@pytest.mark.slow
def test_an_unreachable_cluster_fails_the_fits_not_the_refresh(
    prefect_harness, tmp_path: Path
) -> None:
    pytest.importorskip("prefect_dask")
    import socket

    import dask

    from scalefit.flows.refresh import refresh

    with socket.socket() as sock:  # a port on 127.0.0.1 that nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    logs = _sweep_folder(tmp_path)
    config = tmp_path / "scalefit.toml"
    config.write_text(
        f'[ingest]\nfolders = ["{logs}"]\nproject = "sweep"\n[fit]\nbootstrap = 10\n'
        f'[scale]\ntask_runner = "dask"\ndask_address = "tcp://127.0.0.1:{port}"\n'
    )
    with dask.config.set({"distributed.comm.timeouts.connect": "2s"}):
        info = refresh(
            config_path=config, db_path=tmp_path / "sf.duckdb", reports_dir=tmp_path / "out"
        )
    # The runner connects on the first bootstrap job: that fit fails, naming the address.
    assert not info.ok and list(info.errors) == ["fit:sweep/chinchilla"]
    assert f"127.0.0.1:{port}" in info.errors["fit:sweep/chinchilla"]
    # Everything else was done: the sweep ingested, comparisons and reports written.
    assert info.counts_after["runs"] == 30 and info.counts_after["fits"] == 0
    assert (tmp_path / "out" / "comparisons.parquet").is_file()
