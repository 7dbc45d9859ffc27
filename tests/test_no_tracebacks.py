"""No traceback reaches a user, and machine output stays machine-readable (issue 11).

A bootstrap resample that cannot be fitted is counted, never fatal; a bad option value is one
line and exit status 1 or 2; `--json` prints one JSON object also on failure; `--version`;
an unknown `models --family` lists the families.
"""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from typer.testing import CliRunner

from scalefit import __version__
from scalefit.cli import app
from scalefit.errors import FitError
from scalefit.fit import fit_isoflop


def _nearly_flat_sweep() -> pl.DataFrame:
    """Three IsoFLOP budgets of five sizes; the middle one has an almost straight profile.

    The full data has a (far) minimum at every budget, but resamples of the middle budget
    that draw three of its points nearly on a line put the parabola's minimum at exp(1e4):
    what raised ``OverflowError`` from ``scalefit fit --law isoflop`` (seed 0, 1000
    resamples)."""
    rows = []
    for flops in (1e18, 1e19, 1e20):
        for params in np.geomspace(1e7, 1e9, 5):
            x = math.log(params)
            if flops == 1e19:
                loss = 3.0 - 0.01 * (x - math.log(1e8)) + 1e-4 * (x - math.log(1e8)) ** 2
            else:
                loss = 3.0 + 0.05 * (x - math.log(math.sqrt(flops / 6 / 20))) ** 2
            rows.append(
                {"params": params, "tokens": flops / (6 * params), "flops": flops, "loss": loss}
            )
    return pl.DataFrame(rows)


def test_isoflop_resamples_that_cannot_be_fitted_are_counted_not_fatal():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fit = fit_isoflop(_nearly_flat_sweep(), n_bootstrap=1000, seed=0)
    assert any("could not be fitted" in str(w.message) for w in caught)
    assert 0 < fit.n_bootstrap_failed < 1000
    assert fit.diagnostics["bootstrap_failed"] == fit.n_bootstrap_failed
    bad = ~np.isfinite(fit.samples).all(axis=1)
    assert int(bad.sum()) == fit.n_bootstrap_failed
    # the intervals come from the resamples that were fitted
    for name, (low, high) in fit.ci.items():
        assert math.isfinite(low) and math.isfinite(high), name
    assert fit.to_json()["n_bootstrap_failed"] == fit.n_bootstrap_failed
    assert f"({fit.n_bootstrap_failed} could not be fitted)" in str(fit).splitlines()[0]


def test_isoflop_full_fit_with_an_overflowing_minimum_is_a_fit_error():
    # Two budgets, the second almost exactly straight: its minimum overflows exp().
    rows = []
    for flops, curvature in ((1e18, 0.05), (1e20, 1e-12)):
        for params in np.geomspace(1e7, 1e9, 5):
            x = math.log(params) - math.log(1e8)
            rows.append(
                {
                    "params": params,
                    "tokens": flops / (6 * params),
                    "flops": flops,
                    "loss": 3.0 - 0.1 * x + curvature * x * x,
                }
            )
    with pytest.raises(FitError, match="nearly flat"):
        fit_isoflop(pl.DataFrame(rows))


@pytest.fixture(scope="module")
def flat_points(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("flat") / "points.parquet"
    _nearly_flat_sweep().write_parquet(path)
    return path


def _one_error_line(result) -> str:
    assert "Traceback" not in result.output + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


def test_readme_isoflop_example_prints_valid_json_with_the_failed_count(flat_points):
    result = CliRunner().invoke(
        app, ["fit", "--input", str(flat_points), "--law", "isoflop", "--json"]
    )
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert out["n_bootstrap"] == 1000
    assert 0 < out["n_bootstrap_failed"] < 1000
    assert any("could not be fitted" in w for w in out["warnings"])
    # the fit's warnings are in its output, not repeated as Python warnings with source lines
    assert "ConvergenceWarning" not in result.stderr


def test_fit_text_output_reports_failed_resamples(flat_points):
    result = CliRunner().invoke(
        app, ["fit", "--input", str(flat_points), "--law", "isoflop", "--bootstrap", "200"]
    )
    assert result.exit_code == 0, result.output
    assert "could not be fitted" in result.stdout
    assert "Traceback" not in result.output


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["fit", "--resample", "run", "--bootstrap", "5"], "`resample` must be one of"),
        (["fit", "--huber-delta", "-1"], "`delta` must be a positive"),
        (["fit", "--bootstrap", "-3"], "`n_bootstrap` must be an integer >= 0"),
        (["fit", "--seed", "-1"], "[fit] seed = -1 is not valid"),
        (["fit", "--law", "gpt"], "unknown --law"),
        (["plan", "--flops", "-5"], "`flops` must be a finite number > 0"),
        (["plan", "--flops", "nan"], "`flops` must be a finite number > 0"),
        (["plan", "--flops", "1e22", "--unique-tokens", "0"], "`unique_tokens`"),
    ],
)
@pytest.mark.parametrize("as_json", [False, True])
def test_bad_option_values_are_one_line_and_a_json_error_object(
    args, expected, as_json, flat_points, tmp_path, monkeypatch
):
    monkeypatch.chdir(tmp_path)  # `plan` reads ./scalefit.duckdb when present: none here
    if args[0] == "fit":
        args = [*args, "--input", str(flat_points)]
    result = CliRunner().invoke(app, [*args, *(["--json"] if as_json else [])])
    assert result.exit_code == 1, result.output
    line = _one_error_line(result)
    assert line.startswith("error: ") and expected in line
    if as_json:
        assert json.loads(result.stdout) == {"error": line.removeprefix("error: ")}
    else:
        assert result.stdout == ""


def test_version():
    result = CliRunner().invoke(app, ["--version"])
    assert result.exit_code == 0
    assert result.stdout.strip() == f"scalefit {__version__}"


@pytest.mark.parametrize("fmt", ["table", "json"])
def test_unknown_model_family_names_the_families(fmt):
    result = CliRunner().invoke(app, ["models", "--family", "gpt3", "-f", fmt])
    assert result.exit_code == 1
    line = _one_error_line(result)
    assert "'gpt3'" in line and "GPT-3" in line and "Llama 3.1" in line
    if fmt == "json":
        assert "error" in json.loads(result.stdout)
    ok = CliRunner().invoke(app, ["models", "--family", "gpt-3", "-f", "json"])
    assert ok.exit_code == 0 and {r["family"] for r in json.loads(ok.stdout)} == {"GPT-3"}


def test_a_bug_is_one_line_unless_debugging(monkeypatch):
    """Any exception that is not a ScalefitError is still one line (saying it is a bug), with
    the traceback only under SCALEFIT_DEBUG=1. The fault is injected into the curated reader."""
    from scalefit.load import curated

    def broken() -> None:
        raise KeyError("boom")

    monkeypatch.setattr(curated, "read_curated", broken)
    monkeypatch.delenv("SCALEFIT_DEBUG", raising=False)
    result = CliRunner().invoke(app, ["models", "-f", "json"])
    assert result.exit_code == 1
    line = _one_error_line(result)
    assert "internal error (KeyError: 'boom')" in line and "SCALEFIT_DEBUG=1" in line
    assert json.loads(result.stdout) == {"error": line.removeprefix("error: ")}
    monkeypatch.setenv("SCALEFIT_DEBUG", "1")
    result = CliRunner().invoke(app, ["models"])
    assert isinstance(result.exception, KeyError)


def test_the_command_line_imports_no_heavy_module_before_a_command_runs():
    """`scalefit --help` and `--version` import typer and rich only: numpy, polars, DuckDB,
    pandera, scipy, matplotlib and Prefect are imported by the commands that use them (the
    time this saves is measured, not asserted: ~0.9 s -> ~0.3 s for `scalefit --help`)."""
    import subprocess
    import sys

    heavy = ("numpy", "polars", "duckdb", "pandera", "scipy", "matplotlib", "prefect")
    code = (
        "import sys; from scalefit.cli import app; "
        f"print(sorted(m for m in {heavy!r} if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]", done.stdout
