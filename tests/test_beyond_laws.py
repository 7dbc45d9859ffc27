"""Laws beyond Chinchilla: data-constrained (Muennighoff et al. 2023) and inference-aware
(Sardana et al. 2023). Hand computations are written out beside each case."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scalefit.errors import AllocationUnavailableError
from scalefit.laws import (
    MUENNIGHOFF_R_D_STAR,
    MUENNIGHOFF_R_N_STAR,
    AllocationLaw,
    ChinchillaLaw,
    DataConstrainedLaw,
    UnreachableLossError,
    break_even_inference_tokens,
    chinchilla_loss,
    data_constrained_loss,
    effective_params,
    effective_tokens,
    inference_optimal_allocation,
    law_from_parameters,
    lowest_loss,
    tokens_for_loss,
    unique_params,
)
from scalefit.load.curated import read_curated

HOFFMANN = ChinchillaLaw(1.69, 406.4, 410.7, 0.34, 0.28)
# Muennighoff et al.'s C4 fit: A = e^6.255414, B = e^7.3049974, E = e^0.6254804,
# alpha = beta = 0.3526596 (appendix "C4 Scaling Coefficients"), R_D*, R_N* (Appendix A).
C4 = DataConstrainedLaw(
    1.869143678, 520.8249517, 1487.716094, 0.3526596, 0.3526596, 15.387756, 5.309743
)


# --------------------------------------------------------------------------- data-constrained


def test_effective_tokens_reproduces_the_papers_worked_example() -> None:
    # Appendix A: U = 1 unique unit trained for five epochs (R_D = 4) with R_D* = 3:
    # D' = 1 + 3 (1 - e^(-4/3)) = 1 + 3 (1 - 0.26360) = 3.2092  (paper: 3.21);
    # at R_D = 100: D' = 1 + 3 (1 - e^(-33.3)) = 3.99 (paper: "will never exceed 4").
    assert effective_tokens(5.0, 1.0, 3.0) == pytest.approx(3.2092, abs=5e-5)
    assert round(float(effective_tokens(101.0, 1.0, 3.0)), 2) == 4.0
    assert float(effective_tokens(1e9, 1.0, 3.0)) <= 4.0


def test_data_constrained_loss_reproduces_the_authors_example() -> None:
    # huggingface/datablations README ("Parametric Fit"), the two models of the paper's
    # Figure 1 (right), printed by the authors' own code with the same constants:
    #   scaling_law(6.34e9, 242e9, 25e9) = 2.2256440889984477   ("This one is better")
    #   scaling_law(8.67e9, 178e9, 25e9) = 2.2269634075087867
    # (A, B, E are exp of the printed logs, rounded here to 10 digits: agreement to ~1e-9.)
    assert float(C4.loss(6.34e9, 242e9, 25e9)) == pytest.approx(2.2256440889984477, rel=1e-8)
    assert float(C4.loss(8.67e9, 178e9, 25e9)) == pytest.approx(2.2269634075087867, rel=1e-8)


def test_unique_params_of_the_c4_fit_is_0051_of_unique_tokens() -> None:
    # Eq. (17): U_N = 0.051 U_D. With alpha = beta, U_N = G (U_D G)^1 = G^2 U_D and
    # G = (A/B)^(1/(2 alpha)) = (520.82 / 1487.72)^(1/0.70532) = 0.35008^1.41779 = 0.22581,
    # so G^2 = 0.05099.
    ratio = float(unique_params(1e10, C4.A, C4.B, C4.alpha, C4.beta)) / 1e10
    assert ratio == pytest.approx(0.05099, abs=5e-5)
    assert round(ratio, 3) == 0.051


def test_c4_fit_reproduces_the_papers_allocation_at_the_gopher_budget() -> None:
    # Appendix "C4 Scaling Coefficients": at C = 5.76e23 the fit predicts N_opt = 70.0B and
    # D_opt = 1.37T. By hand: C/6 = 9.6e22, a = b = 0.5, N = G sqrt(C/6) = 0.22581 * 3.0984e11.
    opt = C4.allocation(5.76e23)
    assert float(opt.params) == pytest.approx(70.0e9, rel=1e-3)
    assert float(opt.tokens) == pytest.approx(1.37e12, rel=2e-3)


def test_curated_muennighoff_law_matches_the_constants_and_round_trips() -> None:
    laws = read_curated().laws
    row = laws.filter(laws["law_id"] == "muennighoff2023").row(0, named=True)
    law = law_from_parameters(row["form"], json.loads(row["parameters"]))
    assert law == C4
    assert (law.R_D_star, law.R_N_star) == (MUENNIGHOFF_R_D_STAR, MUENNIGHOFF_R_N_STAR)
    assert law_from_parameters(law.form, law.parameters()) == law
    assert row["source_id"] == "muennighoff2023"


def test_decay_keeps_repetition_and_excess_parameters_bounded() -> None:
    u = 1e10
    d = np.geomspace(u, 1e6 * u, 50)
    d_eff = effective_tokens(d, u, MUENNIGHOFF_R_D_STAR)
    assert np.all(np.diff(d_eff) >= 0) and np.all(np.diff(d_eff[:10]) > 0)
    assert np.all(d_eff <= u * (1 + MUENNIGHOFF_R_D_STAR))
    n_eff = effective_params(np.geomspace(1.0, 1e6, 50), 1.0, MUENNIGHOFF_R_N_STAR)
    assert np.all(n_eff <= 1 + MUENNIGHOFF_R_N_STAR)


coefs = st.fixed_dictionaries(
    {
        "E": st.floats(0.5, 3.0),
        "A": st.floats(10.0, 5000.0),
        "B": st.floats(10.0, 5000.0),
        "alpha": st.floats(0.1, 0.8),
        "beta": st.floats(0.1, 0.8),
    }
)


@settings(max_examples=200, deadline=None)
@given(
    coefs,
    st.floats(1e6, 1e13),
    st.floats(1.0, 1e3),
    st.floats(1e-3, 1.0),
    st.floats(0.1, 100.0),
    st.floats(0.1, 100.0),
)
def test_without_repetition_the_data_constrained_law_is_the_parametric_law(
    c: dict, tokens: float, unique_over_tokens: float, params_frac: float, rd: float, rn: float
) -> None:
    # U_D >= D (one epoch at most) and N <= U_N: D' = D and N' = N exactly.
    unique = tokens * unique_over_tokens
    u_n = float(unique_params(tokens, c["A"], c["B"], c["alpha"], c["beta"]))
    params = params_frac * u_n
    got = data_constrained_loss(params, tokens, unique, R_D_star=rd, R_N_star=rn, **c)
    want = chinchilla_loss(params, tokens, **c)
    assert float(got) == pytest.approx(float(want), rel=1e-12)


@settings(max_examples=100, deadline=None)
@given(coefs, st.floats(1e6, 1e12), st.floats(1e6, 1e12), st.floats(1e-4, 1.0))
def test_infinite_decay_constants_give_the_parametric_law(
    c: dict, params: float, tokens: float, unique_frac: float
) -> None:
    got = data_constrained_loss(
        params, tokens, unique_frac * tokens, R_D_star=math.inf, R_N_star=math.inf, **c
    )
    assert float(got) == pytest.approx(float(chinchilla_loss(params, tokens, **c)), rel=1e-12)


def test_repetition_moves_the_optimum_to_more_epochs_and_fewer_params() -> None:
    law = DataConstrainedLaw(1.69, 406.4, 410.7, 0.34, 0.28, 15.387756, 5.309743)
    free = law.allocation(1e23)
    tight = law.constrained_allocation(1e23, unique_tokens=1e11)
    assert float(tight.params) < float(free.params)
    assert float(tight.tokens) / 1e11 > 1.0
    # the optimum is a minimum along the budget
    n = np.asarray(tight.params) * np.array([0.9, 1.0, 1.1])
    losses = law.loss(n, 1e23 / (6 * n), 1e11)
    assert losses[1] <= losses[0] and losses[1] <= losses[2]
    # with plenty of unique data it is the Chinchilla optimum
    loose = law.constrained_allocation(1e23, unique_tokens=1e15)
    assert float(loose.params) == pytest.approx(float(free.params), rel=1e-6)


# --------------------------------------------------------------------------- inference-aware


def test_break_even_inference_tokens_for_llama3_8b_by_hand() -> None:
    # LLaMA-3 8B on 15T tokens under Hoffmann et al.'s approach 3:
    #   alpha A N^-alpha = 0.34 * 406.4 * (8e9)^-0.34 = 0.34 * 0.174543 = 0.0593447
    #   beta  B D^-beta  = 0.28 * 410.7 * (1.5e13)^-0.28 = 0.28 * 0.0839884 = 0.0235167
    #   ratio = 2.52351;  T = 3 D (ratio - 1) = 4.5e13 * 1.52351 = 6.8558e13 tokens.
    # At T = 6.8558e13 inference tokens, 8B trained on 15T is the cheapest way to its loss.
    t = float(break_even_inference_tokens(HOFFMANN, 8e9, 15e12))
    assert t == pytest.approx(6.8558e13, rel=1e-4)
    target = float(HOFFMANN.loss(8e9, 15e12))  # 1.69 + 0.174543 + 0.083988 = 1.948532
    assert target == pytest.approx(1.948532, abs=1e-6)
    opt = inference_optimal_allocation(HOFFMANN, target, t)
    assert opt.params == pytest.approx(8e9, rel=1e-5)
    assert opt.tokens == pytest.approx(15e12, rel=1e-5)


def test_break_even_is_zero_at_the_compute_optimum_and_numeric_path_agrees() -> None:
    opt = HOFFMANN.allocation(1e22)
    assert float(break_even_inference_tokens(HOFFMANN, opt.params, opt.tokens)) == pytest.approx(
        0.0, abs=1e-3 * float(opt.tokens)
    )
    # the central-difference path (used for laws without a closed form) on a data-constrained
    # law with ample unique data agrees with the closed form
    dc = DataConstrainedLaw(1.69, 406.4, 410.7, 0.34, 0.28, 15.387756, 5.309743)
    closed = float(break_even_inference_tokens(HOFFMANN, 8e9, 15e12))
    numeric = float(break_even_inference_tokens(dc, 8e9, 15e12, unique_tokens=1e20))
    assert numeric == pytest.approx(closed, rel=1e-6)


@settings(max_examples=60, deadline=None)
@given(coefs, st.floats(1e19, 1e26))
def test_with_zero_inference_the_inference_aware_optimum_is_compute_optimal(
    c: dict, flops: float
) -> None:
    law = ChinchillaLaw(**c)
    opt = law.allocation(flops)
    target = float(law.loss(opt.params, opt.tokens))
    got = inference_optimal_allocation(law, target, 0.0)
    assert got.params == pytest.approx(float(opt.params), rel=1e-5)
    assert got.tokens == pytest.approx(float(opt.tokens), rel=1e-5)
    assert got.total_flops == pytest.approx(flops, rel=1e-7)  # cancellation in L - E


def test_more_inference_means_a_smaller_model_on_more_tokens() -> None:
    target = 2.0
    prev = inference_optimal_allocation(HOFFMANN, target, 0.0)
    for t in (1e11, 1e12, 1e13, 1e14):
        got = inference_optimal_allocation(HOFFMANN, target, t)
        assert got.params < prev.params and got.tokens > prev.tokens
        assert float(HOFFMANN.loss(got.params, got.tokens)) == pytest.approx(target, rel=1e-10)
        prev = got


def test_data_constrained_inference_path_agrees_with_the_constrained_optimum() -> None:
    # generic (bisection) path: at zero inference, the cheapest way to the data-constrained
    # optimum's loss is that optimum itself
    dc = DataConstrainedLaw(1.69, 406.4, 410.7, 0.34, 0.28, 15.387756, 5.309743)
    opt = dc.constrained_allocation(1e23, 1e11)
    target = float(dc.loss(opt.params, opt.tokens, 1e11))
    got = inference_optimal_allocation(dc, target, 0.0, unique_tokens=1e11)
    assert got.params == pytest.approx(float(opt.params), rel=1e-4)
    assert got.total_flops == pytest.approx(1e23, rel=1e-7)


def test_unreachable_targets_raise_clearly() -> None:
    with pytest.raises(UnreachableLossError, match=r"lowest loss is 1\.69"):
        inference_optimal_allocation(HOFFMANN, 1.69, 1e12)
    with pytest.raises(UnreachableLossError):
        inference_optimal_allocation(HOFFMANN, 1.5, 0.0)
    dc = DataConstrainedLaw(1.69, 406.4, 410.7, 0.34, 0.28, 15.387756, 5.309743)
    plateau = lowest_loss(dc, unique_tokens=1e9)
    assert plateau > 1.69
    with pytest.raises(UnreachableLossError, match="unique tokens"):
        inference_optimal_allocation(dc, plateau * 0.999, 1e12, unique_tokens=1e9)
    with pytest.raises(AllocationUnavailableError):
        inference_optimal_allocation(AllocationLaw(params_exp=0.5, params_coef=0.1), 2.0, 1.0)
    with pytest.raises(ValueError, match="inference_tokens"):
        inference_optimal_allocation(HOFFMANN, 2.0, -1.0)
    # unique tokens need a data-constrained law: a clear error, not a TypeError
    with pytest.raises(AllocationUnavailableError, match="no notion of unique tokens"):
        break_even_inference_tokens(HOFFMANN, 8e9, 15e12, unique_tokens=1e12)


def test_tokens_for_loss_is_nan_where_params_alone_cannot_reach_the_target() -> None:
    # L(N, inf) = 1.69 + 406.4 N^-0.34 >= 2.0 when N <= (406.4 / 0.31)^(1/0.34) = 1.5e9
    d = tokens_for_loss(HOFFMANN, np.array([1e9, 1e10]), 2.0)
    assert math.isnan(d[0]) and d[1] > 0


# --------------------------------------------------------------------------- comparisons


@pytest.fixture(scope="module")
def comparisons():
    from scalefit.compare import compare_models

    data = read_curated()
    return compare_models(data.models, data.laws)


def _row(frame, model_id: str, law_id: str) -> dict:
    import polars as pl

    rows = frame.filter((pl.col("model_id") == model_id) & (pl.col("law_id") == law_id))
    assert rows.height == 1
    return rows.row(0, named=True)


def test_comparisons_break_even_and_conventions(comparisons) -> None:
    a3 = "hoffmann2022_approach3"
    # LLaMA-3 8B: 6.8558e13 inference tokens (hand computation above).
    llama = _row(comparisons, "llama3-8b", a3)
    assert llama["break_even_inference_tokens"] == pytest.approx(6.8558e13, rel=1e-4)
    # Chinchilla 70B is *larger* than approach 3's optimum (size ratio 2.17): no demand
    # makes its size optimal, so the column is null.
    assert _row(comparisons, "chinchilla-70b", a3)["break_even_inference_tokens"] is None
    assert set(comparisons["param_convention"]) == {"total"}
    assert set(comparisons["flops_source"]) == {"6ND", "published"}
    # Gopher 280B publishes 5.76e23 FLOPs: 5.76e23 / (6 * 2.8e11 * 3e11) = 1.142857; the
    # optimum at that larger budget wants more tokens than at 6ND.
    gopher = _row(comparisons, "gopher-280b", a3)
    assert gopher["flops_source"] == "published" and gopher["flops"] == 5.76e23
    assert gopher["published_flops_over_6nd"] == pytest.approx(1.142857, rel=1e-6)
    assert gopher["token_excess"] < gopher["token_excess_6nd"]
    # MoE rows carry the dense-fit caveat and an active-parameter break-even.
    v3 = _row(comparisons, "deepseek-v3", a3)
    assert "dense" in v3["notes"] and v3["break_even_inference_tokens_active"] > 0
    assert _row(comparisons, "llama3-8b", a3)["notes"] is None
    # No curated model states its unique tokens: the data-constrained view is empty.
    assert comparisons["unique_tokens"].null_count() == comparisons.height
    # Non-embedding counts are not curated either.
    assert comparisons["tokens_per_param_ratio_non_embedding"].null_count() == comparisons.height


def test_comparisons_data_constrained_and_non_embedding_views_when_given() -> None:
    import polars as pl

    from scalefit.compare import compare_models

    models = pl.DataFrame(
        {
            "model_id": ["m"],
            "params": [1e9],
            "active_params": [1e9],
            "tokens": [1e11],
            "non_embedding_params": [8e8],
            "unique_tokens": [2.5e10],
        }
    )
    laws = pl.DataFrame(
        {
            "law_id": ["a3"],
            "form": ["chinchilla"],
            "parameters": [json.dumps(HOFFMANN.parameters())],
        }
    )
    row = compare_models(models, laws).row(0, named=True)
    assert row["epochs"] == pytest.approx(4.0)
    # R_D = 1e11 / 2.5e10 - 1 = 3; e^(-3/15.387756) = e^(-0.194961) = 0.822865;
    # D' = 2.5e10 (1 + 15.387756 * 0.177135) = 2.5e10 * 3.725727 = 9.3143e10
    assert row["effective_tokens"] == pytest.approx(9.3143e10, rel=1e-4)
    dc = DataConstrainedLaw(**HOFFMANN.parameters(), R_D_star=15.387756, R_N_star=5.309743)
    assert row["data_constrained_loss"] == pytest.approx(float(dc.loss(1e9, 1e11, 2.5e10)))
    assert row["data_constrained_loss"] > row["predicted_loss"]
    assert row["tokens_per_non_embedding_param"] == pytest.approx(125.0)
    assert row["tokens_per_param_ratio_non_embedding"] > row["tokens_per_param_ratio"]
