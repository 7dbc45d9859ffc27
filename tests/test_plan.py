"""``scalefit.plan`` and ``scalefit plan``: compute-optimal, data-constrained and
inference-aware choices for a budget."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from typer.testing import CliRunner

from scalefit import store
from scalefit.cli import app
from scalefit.fit import fit_chinchilla
from scalefit.fit_store import save_fit
from scalefit.laws import (
    ChinchillaLaw,
    DataConstrainedLaw,
    UnreachableLossError,
    chinchilla_loss,
)
from scalefit.plan import plan_budget

HOFFMANN = ChinchillaLaw(1.69, 406.4, 410.7, 0.34, 0.28)
runner = CliRunner()


def run_json(*args: str) -> dict:
    result = runner.invoke(app, ["plan", *args, "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


@pytest.fixture
def no_db(tmp_path: Path) -> list[str]:
    """Options pointing at a missing database: the curated laws are used."""
    return ["--db", str(tmp_path / "missing.duckdb")]


def test_cli_default_law_is_besiroglu_and_agrees_with_chinchilla(no_db: list[str]) -> None:
    # besiroglu2024 (E 1.8172, A 482.01, B 2085.43, alpha 0.3478, beta 0.3658):
    # G = (0.3478*482.01/(0.3658*2085.43))^(1/0.7136) = 0.219759^1.401345 = 0.119718;
    # a = 0.3658/0.7136 = 0.512612; N_opt = G (9.6e22)^a = 7.2249e10, D_opt = C/(6 N_opt)
    # = 1.3287e12: about Chinchilla's own 70B on 1.4T at its budget.
    out = run_json("--flops", "5.76e23", *no_db)
    co = out["compute_optimal"]
    assert co["params"] == pytest.approx(7.2249e10, rel=1e-4)
    assert co["tokens"] == pytest.approx(1.3287e12, rel=1e-4)
    assert out["law"] == {"law_id": "besiroglu2024", "form": "chinchilla", "caveat": None}
    assert "inference_aware" not in out and "data_constrained" not in out


def test_cli_reproduces_hoffmann_approach3_allocation_and_prints_its_caveat(
    no_db: list[str],
) -> None:
    # N_opt = G (C/6)^(beta/(alpha+beta)), G = (0.34*406.4/(0.28*410.7))^(1/0.62) = 1.2018^1.6129
    # = 1.3451; C/6 = 9.6e22; N_opt = 1.3451 * (9.6e22)^0.45161 = 3.219e10; D_opt = C/(6 N_opt)
    a3 = ["--law", "hoffmann2022_approach3"]
    out = run_json("--flops", "5.76e23", *a3, *no_db)
    want = HOFFMANN.allocation(5.76e23)
    co = out["compute_optimal"]
    assert co["params"] == pytest.approx(float(want.params), rel=1e-12)
    assert co["tokens"] == pytest.approx(float(want.tokens), rel=1e-12)
    assert co["params"] == pytest.approx(3.219e10, rel=1e-3)
    assert co["tokens_per_param"] == pytest.approx(co["tokens"] / co["params"])
    assert co["loss"] == pytest.approx(float(HOFFMANN.loss(want.params, want.tokens)))
    assert out["law"]["law_id"] == "hoffmann2022_approach3"
    assert "not the optimum of the paper's own objective" in out["law"]["caveat"]
    result = runner.invoke(app, ["plan", "--flops", "5.76e23", *a3, *no_db])
    assert result.exit_code == 0, result.output
    assert "caveat (hoffmann2022_approach3): Printed constants" in result.output


def test_cli_exponent_only_law_error_says_what_would_work(no_db: list[str]) -> None:
    args = ["plan", "--flops", "1e23", "--law", "hoffmann2022_approach1", *no_db]
    result = runner.invoke(app, args)
    assert result.exit_code == 1
    text = " ".join(result.output.split())
    assert "`hoffmann2022_approach1`: this `allocation` law cannot size a compute budget" in text
    assert "states only the exponents" in text
    assert "an `allocation` law that states a coefficient" in text


def test_cli_large_inference_demand_recommends_a_smaller_model_on_more_tokens(
    no_db: list[str],
) -> None:
    out = run_json("--flops", "5.76e23", "--inference-tokens", "1e14", *no_db)
    co, ia = out["compute_optimal"], out["inference_aware"]
    assert ia["params"] < 0.5 * co["params"]
    assert ia["tokens"] > 2 * co["tokens"]
    assert ia["loss"] == pytest.approx(co["loss"], rel=1e-12)
    assert ia["total_flops"] == pytest.approx(
        6 * ia["params"] * ia["tokens"] + 2 * ia["params"] * 1e14
    )
    assert ia["compute_optimal_total_flops"] == pytest.approx(5.76e23 + 2 * co["params"] * 1e14)
    assert 0 < ia["saving_fraction"] < 1
    assert ia["saving_flops"] == pytest.approx(
        ia["compute_optimal_total_flops"] - ia["total_flops"]
    )


def test_cli_data_constrained_reports_epochs_and_table_output(no_db: list[str]) -> None:
    out = run_json("--flops", "1e23", "--unique-tokens", "1e11", *no_db)
    dc = out["data_constrained"]
    assert dc["epochs"] == pytest.approx(dc["tokens"] / 1e11)
    assert dc["epochs"] > 1 and dc["params"] < out["compute_optimal"]["params"]
    args = ["--flops", "1e23", "--unique-tokens", "2e12", "--inference-tokens", "2.4e13"]
    result = runner.invoke(app, ["plan", *args, *no_db])
    assert result.exit_code == 0, result.output
    for word in ("compute-optimal", "data-constrained", "inference-aware", "epochs", "saving"):
        assert word in result.output


def test_cli_errors_are_one_line(no_db: list[str]) -> None:
    result = runner.invoke(app, ["plan", "--flops", "1e23", "--law", "nope", *no_db])
    assert result.exit_code == 1
    assert "no law `nope`" in result.output and "hoffmann2022_approach3" in result.output
    result = runner.invoke(
        app,
        ["plan", "--flops", "1e23", "--inference-tokens", "1e12", "--target-loss", "1.6", *no_db],
    )
    assert result.exit_code == 1
    assert "unreachable" in result.output
    result = runner.invoke(app, ["plan", "--flops", "1e23", "--law", "kaplan2020", *no_db])
    assert result.exit_code == 1 and "allocation" in result.output


def test_zero_inference_and_ample_data_change_nothing() -> None:
    p = plan_budget(HOFFMANN, 1e22, unique_tokens=1e15, inference_tokens=0.0)
    co, dc, ia = p.compute_optimal, p.data_constrained, p.inference_aware
    assert dc.params == pytest.approx(co.params, rel=1e-6)
    assert ia.params == pytest.approx(co.params, rel=1e-5)
    assert ia.saving_fraction == pytest.approx(0.0, abs=1e-9)


def test_target_loss_is_met_and_saving_is_against_the_same_loss() -> None:
    p = plan_budget(HOFFMANN, 1e22, inference_tokens=1e13, target_loss=2.1)
    ia = p.inference_aware
    assert float(HOFFMANN.loss(ia.params, ia.tokens)) == pytest.approx(2.1, rel=1e-10)
    # the baseline is the compute-optimal model for loss 2.1, serving the same tokens
    ref = plan_budget(HOFFMANN, 1e22, inference_tokens=0.0, target_loss=2.1).inference_aware
    assert ia.compute_optimal_total_flops == pytest.approx(
        6 * ref.params * ref.tokens + 2 * ref.params * 1e13, rel=1e-6
    )
    with pytest.raises(UnreachableLossError):
        plan_budget(HOFFMANN, 1e22, inference_tokens=1.0, target_loss=1.69)
    with pytest.raises(ValueError, match="flops"):
        plan_budget(HOFFMANN, -1.0)


def test_a_data_constrained_law_uses_its_own_decay_constants() -> None:
    law = DataConstrainedLaw(1.69, 406.4, 410.7, 0.34, 0.28, 3.0, 3.0)
    own = plan_budget(law, 1e23, unique_tokens=1e11)
    published = plan_budget(HOFFMANN, 1e23, unique_tokens=1e11)
    assert own.data_constrained.params != pytest.approx(published.data_constrained.params)
    assert any("Muennighoff" in n for n in published.notes)
    assert not any("Muennighoff" in n for n in own.notes)


def _synthetic_points() -> pl.DataFrame:
    rng = np.random.default_rng(0)
    n, d = np.meshgrid(np.geomspace(1e7, 3e9, 7), np.geomspace(1e9, 1e11, 7))
    loss = chinchilla_loss(n, d, 1.8, 480.0, 2000.0, 0.35, 0.37)
    loss = loss * np.exp(rng.normal(0, 0.005, loss.shape))
    return pl.DataFrame({"params": n.ravel(), "tokens": d.ravel(), "loss": loss.ravel()})


@pytest.fixture(scope="module")
def fitted():
    return fit_chinchilla(_synthetic_points(), n_bootstrap=40, starts=[[6, 7.5, 0.5, 0.4, 0.4]])


def test_intervals_from_a_fit_cover_the_estimates(fitted) -> None:
    p = plan_budget(fitted, 1e22, unique_tokens=5e10, inference_tokens=1e13)
    assert p.n_samples == fitted.n_bootstrap and p.confidence_level == 0.95
    for point in (p.compute_optimal, p.data_constrained, p.inference_aware):
        for name in ("params", "tokens", "loss"):
            lo, hi = point.ci[name]
            assert lo <= getattr(point, name) <= hi, (name, lo, hi)
    assert "ci" in p.to_json()["inference_aware"]


def test_cli_plans_with_a_stored_fit_and_its_bootstrap_samples(fitted, tmp_path: Path) -> None:
    db = tmp_path / "s.duckdb"
    with store.connect(db) as con:
        save_fit(con, fitted, selection="synthetic", law_id="my_fit")
    out = run_json("--flops", "1e22", "--law", "my_fit", "--db", str(db))
    assert out["law"] == {"law_id": "my_fit", "form": "chinchilla", "caveat": None}
    assert out["n_samples"] == fitted.n_bootstrap
    lo, hi = out["compute_optimal"]["ci"]["params"]
    assert lo <= out["compute_optimal"]["params"] <= hi
    want = fitted.law.allocation(1e22)
    assert out["compute_optimal"]["params"] == pytest.approx(float(want.params), rel=1e-9)
