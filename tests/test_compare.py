"""Tokens per parameter, compute-optimal allocation and the over-training measures, checked by
hand."""

from __future__ import annotations

import json

import numpy as np
import polars as pl
import pytest

from scalefit.compare import compare_models
from scalefit.load.curated import read_curated

HOFFMANN_A3 = {"E": 1.69, "A": 406.4, "B": 410.7, "alpha": 0.34, "beta": 0.28}


@pytest.fixture(scope="module")
def comparisons() -> pl.DataFrame:
    data = read_curated()
    return compare_models(data.models, data.laws)


def _row(frame: pl.DataFrame, model_id: str, law_id: str) -> dict:
    rows = frame.filter((pl.col("model_id") == model_id) & (pl.col("law_id") == law_id))
    assert rows.height == 1, (model_id, law_id)
    return rows.row(0, named=True)


def test_tokens_per_param_by_hand(comparisons: pl.DataFrame) -> None:
    rule = "rule_20_tokens_per_param"
    # GPT-3 175B: 300e9 tokens / 175e9 params = 12/7.
    assert _row(comparisons, "gpt3-175b", rule)["tokens_per_param"] == pytest.approx(12 / 7)
    # Llama 3 8B: 15e12 / 8e9 = 1875 (the paper's "15T+", kept as 15T).
    assert _row(comparisons, "llama3-8b", rule)["tokens_per_param"] == pytest.approx(1875.0)
    # DeepSeek-V3: 14.8e12 tokens / 37e9 activated params = 400; / 671e9 total = 22.0566.
    v3 = _row(comparisons, "deepseek-v3", rule)
    assert v3["tokens_per_active_param"] == pytest.approx(400.0)
    assert v3["tokens_per_param"] == pytest.approx(14.8e12 / 671e9)


def test_approach3_allocation_and_over_training_for_chinchilla_by_hand(
    comparisons: pl.DataFrame,
) -> None:
    # Chinchilla 70B on 1.4T tokens, Hoffmann et al. (2022) approach-3 law, at the paper's
    # published budget C = 5.76e23 (6ND would be 5.88e23), C/6 = 9.6e22:
    #   G = (0.34 * 406.4 / (0.28 * 410.7))^(1/0.62) = (138.176 / 114.996)^1.6129 = 1.344711
    #   a = 0.28/0.62 = 0.451613, b = 0.34/0.62 = 0.548387
    #   N_opt = G * 9.6e22^a = 3.2190e10, D_opt = 9.6e22^b / G = 2.9823e12
    #   token excess D/D_opt = 1.4e12 / 2.9823e12 = 0.46944
    #   size ratio N/N_opt = 70e9 / 3.2190e10 = 2.1746
    #   ratio of ratios (D/N)/(D_opt/N_opt) = 20 / 92.647 = 0.21587 (= 0.46944 / 2.1746)
    #   L(70e9, 1.4e12) = 1.69 + 406.4/70e9^0.34 + 410.7/1.4e12^0.28 = 1.69 + 0.08358 + 0.16311
    #                   = 1.93665; L(N_opt, D_opt) = 1.93075 (at 5.76e23)
    #   loss cost, against the optimum on the model's own iso-compute curve (6ND = 5.88e23):
    #   N_opt = 3.2491e10, D_opt = 3.0162e12, L = 1.92999; 1.93665 - 1.92999 = 0.006658
    row = _row(comparisons, "chinchilla-70b", "hoffmann2022_approach3")
    assert row["flops"] == pytest.approx(5.76e23)
    assert row["flops_source"] == "published"
    assert row["flops_6nd"] == pytest.approx(5.88e23)
    assert row["optimal_params"] == pytest.approx(3.2190e10, rel=1e-4)
    assert row["optimal_tokens"] == pytest.approx(2.9823e12, rel=1e-4)
    assert row["optimal_tokens_per_param"] == pytest.approx(92.647, rel=1e-4)
    assert row["token_excess"] == pytest.approx(0.46944, rel=1e-4)
    assert row["size_ratio"] == pytest.approx(2.1746, rel=1e-4)
    assert row["tokens_per_param_ratio"] == pytest.approx(0.21587, rel=1e-4)
    assert row["predicted_loss"] == pytest.approx(1.93665, abs=1e-4)
    assert row["optimal_loss"] == pytest.approx(1.93075, abs=1e-4)
    assert row["loss_cost"] == pytest.approx(0.006658, rel=1e-3)
    # at 6ND = 5.88e23 instead: D_opt = 9.8e22^b / G = 3.0162e12, token excess 0.46416
    assert row["token_excess_6nd"] == pytest.approx(0.46416, rel=1e-4)


def test_twenty_tokens_rule_by_hand(comparisons: pl.DataFrame) -> None:
    # Chinchilla at its published 5.76e23 FLOPs: N_opt = sqrt(C / 120) = 6.9282e10,
    # D_opt = 20 N_opt = 1.38564e12; token excess 1.4e12 / 1.38564e12 = 1.010363.
    row = _row(comparisons, "chinchilla-70b", "rule_20_tokens_per_param")
    assert row["optimal_params"] == pytest.approx(6.9282e10, rel=1e-5)
    assert row["optimal_tokens"] == pytest.approx(1.38564e12, rel=1e-5)
    assert row["token_excess"] == pytest.approx(1.010363, rel=1e-5)
    assert row["tokens_per_param_ratio"] == pytest.approx(1.0)
    assert row["predicted_loss"] is None and row["loss_cost"] is None
    # Llama 3 8B (6ND: 7.2e23): N_opt = sqrt(7.2e23 / 120) = 7.74597e10, D_opt = 1.549193e12;
    # it saw 15e12 / 1.549193e12 = 9.6825x the optimal tokens on a model 8e9 / 7.74597e10 =
    # 0.10328 of the optimal size; the ratio of ratios is 1875 / 20 = 93.75 = 9.6825^2.
    row = _row(comparisons, "llama3-8b", "rule_20_tokens_per_param")
    assert row["flops_source"] == "6ND"
    assert row["token_excess"] == pytest.approx(9.682458, rel=1e-6)
    assert row["size_ratio"] == pytest.approx(0.1032796, rel=1e-6)
    assert row["tokens_per_param_ratio"] == pytest.approx(93.75)
    assert row["tokens_per_param_ratio"] == pytest.approx(row["token_excess"] ** 2)


def test_the_comparisons_view_carries_each_laws_caveat(tmp_path) -> None:
    from scalefit import store
    from scalefit.compare import refresh_comparisons
    from scalefit.load.curated import load_curated

    with store.connect(tmp_path / "s.duckdb") as con:
        load_curated(con, read_curated())
        refresh_comparisons(con)
        rows = store.query(
            con,
            "SELECT law_id, any_value(law_caveat) AS caveat, count(*) AS n FROM comparisons "
            "GROUP BY law_id",
        )
        frame = store.query(con, "SELECT * FROM comparisons")
    caveats = dict(zip(rows["law_id"], rows["caveat"], strict=True))
    assert "not the optimum of the paper's own objective" in caveats["hoffmann2022_approach3"]
    assert caveats["besiroglu2024"] is None and caveats["rule_20_tokens_per_param"] is None

    # the Parquet report carries each column's definition, from the schema
    from scalefit.report import parquet_metadata, write_parquet
    from scalefit.schemas import ComparisonSchema

    path = tmp_path / "comparisons.parquet"
    write_parquet(frame, path, table="comparisons", input_sha256="0" * 64)
    defined = json.loads(parquet_metadata(path)["scalefit.columns"])
    schema = ComparisonSchema.to_schema().columns
    for name in ("token_excess", "size_ratio", "tokens_per_param_ratio", "loss_cost"):
        assert defined[name]["description"] == schema[name].description
    assert defined["token_excess"]["description"].startswith("Token excess D / D_opt")
    assert defined["token_excess"]["unit"] == "1" and defined["loss_cost"]["unit"] == "nats"
    assert "caveat" in defined["law_caveat"]["description"] and "tokens" in defined


def test_moe_comparison_uses_active_parameters_for_active_columns(
    comparisons: pl.DataFrame,
) -> None:
    # DeepSeek-V3 under the 20-tokens rule at 6 x 37e9 x 14.8e12 = 3.2856e24 FLOPs (active):
    # N_opt = sqrt(3.2856e24 / 120) = 1.65469e11, D_opt = 3.30937e12;
    # token excess 14.8e12 / 3.30937e12 = 4.47215, size ratio 37e9 / 1.65469e11 = 0.223607.
    row = _row(comparisons, "deepseek-v3", "rule_20_tokens_per_param")
    assert row["flops_active"] == pytest.approx(6 * 37e9 * 14.8e12)
    assert row["tokens_per_param_ratio_active"] == pytest.approx(400 / 20)
    assert row["token_excess_active"] == pytest.approx(4.47214, rel=1e-5)
    assert row["size_ratio_active"] == pytest.approx(0.223607, rel=1e-5)
    assert row["tokens_per_param_ratio"] == pytest.approx((14.8e12 / 671e9) / 20)


def test_allocation_exponents_add_to_one_and_optimum_is_a_minimum() -> None:
    models = pl.DataFrame(
        {"model_id": ["m"], "params": [1e9], "active_params": [1e9], "tokens": [2e10]}
    )
    laws = pl.DataFrame(
        {"law_id": ["a3"], "form": ["chinchilla"], "parameters": [json.dumps(HOFFMANN_A3)]}
    )
    row = compare_models(models, laws).row(0, named=True)
    # The optimum is the loss minimum along the iso-compute curve N * D = C / 6.
    from scalefit.laws import ChinchillaLaw

    law = ChinchillaLaw(**HOFFMANN_A3)
    c6 = row["flops"] / 6
    n_grid = row["optimal_params"] * np.exp(np.linspace(-0.5, 0.5, 101))
    losses = law.loss(n_grid, c6 / n_grid)
    assert np.argmin(losses) == 50
    a, b = law.exponents
    assert a + b == pytest.approx(1.0)


def test_laws_without_allocation_are_skipped() -> None:
    models = pl.DataFrame(
        {"model_id": ["m"], "params": [1e9], "active_params": [1e9], "tokens": [2e10]}
    )
    laws = pl.DataFrame(
        {
            "law_id": ["exponents-only"],
            "form": ["allocation"],
            "parameters": [json.dumps({"params_exp": 0.5, "tokens_exp": 0.5})],
        }
    )
    result = compare_models(models, laws)
    assert result.height == 0
    assert result.columns[:3] == ["model_id", "law_id", "law_form"]


def test_a_model_at_the_laws_optimum_has_unit_ratios_and_no_loss_cost() -> None:
    from scalefit.laws import ChinchillaLaw

    opt = ChinchillaLaw(**HOFFMANN_A3).allocation(1e22)
    n, d = float(opt.params), float(opt.tokens)
    models = pl.DataFrame(
        {
            "model_id": ["at_opt", "half"],
            "params": [n, n / 2],
            "active_params": [n, n / 2],
            "tokens": [d, 2 * d],
        }
    )
    laws = pl.DataFrame(
        {"law_id": ["a3"], "form": ["chinchilla"], "parameters": [json.dumps(HOFFMANN_A3)]}
    )
    at_opt, half = compare_models(models, laws).rows(named=True)
    for name in ("token_excess", "size_ratio", "tokens_per_param_ratio"):
        assert at_opt[name] == pytest.approx(1.0)
    assert at_opt["loss_cost"] == pytest.approx(0.0, abs=1e-12)
    # half the size on twice the tokens, same compute: excess 2, size 1/2, ratio of ratios 4,
    # and the loss rises by L(N/2, 2D) - L(N, D) (by hand from the formula).
    assert (half["token_excess"], half["size_ratio"]) == pytest.approx((2.0, 0.5))
    assert half["tokens_per_param_ratio"] == pytest.approx(4.0)
    a, b, al, be = (HOFFMANN_A3[k] for k in ("A", "B", "alpha", "beta"))
    by_hand = (a / (n / 2) ** al + b / (2 * d) ** be) - (a / n**al + b / d**be)
    assert half["loss_cost"] == pytest.approx(by_hand, rel=1e-9)
    assert half["loss_cost"] > 0


def test_a_store_from_before_the_new_columns_is_refreshed(tmp_path) -> None:
    # a store made by an older scalefit: comparison_results had a NOT NULL
    # `overtraining_factor`; the derived table is recreated, not failed on.
    from scalefit import store
    from scalefit.compare import refresh_comparisons
    from scalefit.load.curated import load_curated

    with store.connect(tmp_path / "s.duckdb") as con:
        load_curated(con, read_curated())
        store.run(con, "DROP VIEW IF EXISTS comparisons")
        store.run(con, "DROP TABLE comparison_results")
        store.run(
            con,
            "CREATE TABLE comparison_results (model_id VARCHAR, law_id VARCHAR, "
            "overtraining_factor DOUBLE NOT NULL)",
        )
        assert refresh_comparisons(con) > 0
        columns = {c for (c,) in store.run(con, "SELECT column_name FROM (DESCRIBE comparisons)")}
    assert {"token_excess", "loss_cost", "law_caveat"} <= columns
    assert "overtraining_factor" not in columns
