"""One FitSettings for every procedure; fit_named passes settings or refuses them; the
registry holds one record per form; the fitting package's import directions."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import polars as pl
import pytest

from scalefit._names import LAW_NAMES
from scalefit.errors import FitError
from scalefit.fit import (
    FORMS,
    REGISTRY,
    FitSettings,
    fit_envelope,
    fit_isoflop,
    fit_law,
    fit_named,
)
from scalefit.laws import chinchilla_loss, law_from_parameters

TRUE = (1.8, 480.0, 2100.0, 0.35, 0.37)


def _isoflop() -> pl.DataFrame:
    rows = []
    for c in (1e18, 1e19, 1e20):
        for n in np.geomspace(1e7, 1e10, 7):
            d = c / (6 * n)
            rows.append({"params": n, "tokens": d, "loss": float(chinchilla_loss(n, d, *TRUE))})
    return pl.DataFrame(rows)


def _curves() -> pl.DataFrame:
    rows = []
    for i, n in enumerate(np.geomspace(1e7, 3e9, 10)):
        for d in np.geomspace(1e8, 3e11, 20):
            loss = float(chinchilla_loss(n, d, *TRUE))
            rows.append({"run_id": f"r{i}", "params": n, "tokens": d, "loss": loss})
    return pl.DataFrame(rows)


def test_settings_have_one_set_of_defaults_checked_once() -> None:
    s = FitSettings()
    assert (s.delta, s.n_bootstrap, s.seed, s.resample, s.confidence_level) == (
        1e-3,
        0,
        0,
        "points",
        0.95,
    )
    assert FitSettings.of(None, delta=1e-2).delta == 0.01
    assert FitSettings.of(s) is s
    with pytest.raises(FitError, match=r"unknown fit setting\(s\) bootstrap;") as info:
        FitSettings.of(s, bootstrap=3)  # type: ignore[arg-type]
    assert "\n" not in str(info.value)
    with pytest.raises(FitError, match="`bootstrap_jobs` must be an integer >= 1"):
        FitSettings(bootstrap_jobs=0)
    with pytest.raises(AttributeError):
        s.delta = 0.1  # type: ignore[misc]
    # a FitSettings and the same values as keywords give the same fit (and fit id)
    n, d = (g.ravel() for g in np.meshgrid(np.geomspace(1e7, 1e9, 4), np.geomspace(1e9, 1e11, 4)))
    data = {"params": n, "tokens": d, "loss": chinchilla_loss(n, d, *TRUE)}
    starts = [[5.0, 5.0, 0.0, 0.5, 0.5]]
    a = fit_law(data, settings=FitSettings(delta=2e-3), starts=starts)
    b = fit_law(data, delta=2e-3, starts=starts)
    assert a.fit_id == b.fit_id and a.settings["delta"] == 2e-3


def test_allocation_fits_refuse_settings_they_do_not_use() -> None:
    iso, curves = _isoflop(), _curves()
    with pytest.raises(FitError, match="isoflop fit takes no Huber `delta`"):
        fit_named(iso, "isoflop", delta=1e-2)
    with pytest.raises(FitError, match="envelope fit takes no Huber `delta`"):
        fit_named(curves, "envelope", settings=FitSettings(delta=1e-2))
    with pytest.raises(FitError, match="resamples points, not 'params'"):
        fit_isoflop(iso, resample="params")
    # one point per run: resampling points within budgets is resampling runs
    by_run = iso.with_columns(run_id=pl.int_range(iso.height).cast(pl.String))
    assert fit_isoflop(by_run, resample="runs", n_bootstrap=3).n_bootstrap == 3
    with pytest.raises(FitError, match="each run gives one point"):
        fit_isoflop(by_run.with_columns(run_id=pl.lit("r")), resample="runs")
    with pytest.raises(FitError, match="resamples runs, not 'params'"):
        fit_envelope(curves, resample="params")
    # the defaults, and the envelope's own unit, are accepted; the rest is passed on
    fit = fit_named(iso, "isoflop", n_bootstrap=5, seed=1, confidence_level=0.9)
    assert fit.settings["n_bootstrap"] == 5 and fit.confidence_level == 0.9
    assert fit_named(curves, "envelope", resample="runs").settings["resample"] == "runs"


def test_the_registry_has_one_record_per_fitted_form() -> None:
    fitted = {v for v in LAW_NAMES.values()} - {"isoflop", "envelope"}
    assert fitted <= set(REGISTRY)
    assert set(FORMS) == set(REGISTRY) - {"data_constrained"}
    for name, form in REGISTRY.items():
        p = len(form.theta_names)
        assert form.lower.shape == form.upper.shape == (p,)
        assert (form.lower < form.upper).all()
        assert form.grid.shape[1] == p
        theta = (form.lower + form.upper) / 2 if name != "chinchilla" else form.grid[7]
        est = {k: float(v[0]) for k, v in form.estimates(theta).items()}
        assert tuple(est) == form.names
        law = form.law(est)
        assert law.form == form.fit_form
        assert law_from_parameters(law.form, law.parameters()) == law


@pytest.mark.parametrize(
    ("module", "absent"),
    [
        ("scalefit.fit", ("scalefit.store", "duckdb", "scalefit.fit_store")),
        ("scalefit.report", ("scalefit.fit",)),
    ],
)
def test_import_directions(module: str, absent: tuple[str, ...]) -> None:
    """Fitting imports nothing of the store; reports import nothing of fitting."""
    code = f"import sys, {module}; print([m for m in {absent!r} if m in sys.modules])"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
