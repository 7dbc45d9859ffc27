"""Law forms: formulas, compute-optimal allocations, round-trips through the `laws` table."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.optimize import minimize_scalar

from scalefit.errors import AllocationUnavailableError, UnknownLawError
from scalefit.laws import (
    AllocationLaw,
    ChinchillaLaw,
    KaplanComputeLaw,
    KaplanJointLaw,
    KaplanLaw,
    KaplanParamsLaw,
    KaplanTokensLaw,
    TokensPerParamLaw,
    chinchilla_allocation,
    law_from_parameters,
)

HOFFMANN = ChinchillaLaw(E=1.69, A=406.4, B=410.7, alpha=0.34, beta=0.28)
KAPLAN_ROW = {  # datasets/laws.csv, law_id kaplan2020
    "alpha_N": 0.076,
    "N_c": 8.8e13,
    "alpha_D": 0.095,
    "D_c": 5.4e13,
    "alpha_C": 0.050,
    "C_c": 3.1e8,
    "C_c_flops": 2.6784e28,
    "params_exp": 0.73,
    "tokens_exp": 0.27,
}


def test_chinchilla_allocation_hand_computed():
    # Symmetric case: A = B, alpha = beta = 0.5 gives G = (0.5 A / (0.5 B))^(1/1) = 1, so
    # N_opt = D_opt = (C/6)^(1/2); at C = 6e20, both are 1e10.
    n, d = chinchilla_allocation(6e20, 100.0, 100.0, 0.5, 0.5)
    assert float(n) == pytest.approx(1e10, rel=1e-12)
    assert float(d) == pytest.approx(1e10, rel=1e-12)
    # Hoffmann et al. Eq. 10: alpha A = 0.34 * 406.4 = 138.176, beta B = 0.28 * 410.7 =
    # 114.996, ratio 1.2015722; G = 1.2015722^(1/0.62) = exp(0.1836309 / 0.62)
    # = exp(0.2961789) = 1.3447106. a = 0.28/0.62 = 0.4516129, b = 0.5483871.
    # At C = 6e20, C/6 = 1e20: 10^(20 a) = 1.0771051e9 and 10^(20 b) = 9.2841454e10, so
    # N_opt = 1.3447106 * 1.0771051e9 = 1.4483946e9, D_opt = 9.2841454e10 / 1.3447106
    # = 6.9041957e10.
    opt = HOFFMANN.allocation(6e20)
    assert float(opt.params) == pytest.approx(1.4483946e9, rel=1e-6)
    assert float(opt.tokens) == pytest.approx(6.9041957e10, rel=1e-6)
    assert float(6 * opt.params * opt.tokens) == pytest.approx(6e20, rel=1e-12)


def test_chinchilla_exponents_add_to_one_and_allocation_minimises_loss():
    a, b = HOFFMANN.exponents
    assert a + b == pytest.approx(1.0, abs=1e-15)
    flops = 1e23
    opt = HOFFMANN.allocation(flops)
    # Minimise L(N, C/(6N)) over log N numerically: the same N.
    res = minimize_scalar(
        lambda x: float(HOFFMANN.loss(math.exp(x), flops / (6 * math.exp(x)))),
        bounds=(math.log(1e8), math.log(1e12)),
        method="bounded",
        options={"xatol": 1e-10},
    )
    assert math.exp(res.x) == pytest.approx(float(opt.params), rel=1e-4)
    # Doubling compute scales N_opt by 2^a.
    ratio = HOFFMANN.allocation(2 * flops).params / opt.params
    assert float(ratio) == pytest.approx(2**a, rel=1e-12)


def test_kaplan_joint_allocation_minimises_joint_loss():
    law = KaplanJointLaw(N_c=8.8e13, alpha_N=0.076, D_c=5.4e13, alpha_D=0.095)
    flops = 1e21
    opt = law.allocation(flops)
    res = minimize_scalar(
        lambda x: float(law.loss(math.exp(x), flops / (6 * math.exp(x)))),
        bounds=(math.log(1e6), math.log(1e13)),
        method="bounded",
        options={"xatol": 1e-10},
    )
    assert math.exp(res.x) == pytest.approx(float(opt.params), rel=1e-4)
    a, b = law.exponents
    assert a + b == pytest.approx(1.0)


def test_kaplan_forms_match_the_paper_formulas():
    n, d = 1e9, 2e10
    assert float(KaplanParamsLaw(8.8e13, 0.076).loss(n)) == pytest.approx((8.8e13 / n) ** 0.076)
    assert float(KaplanTokensLaw(5.4e13, 0.095, E=1.0).loss(None, d)) == pytest.approx(
        1.0 + (5.4e13 / d) ** 0.095
    )
    c = KaplanComputeLaw(C_c=2.6784e28, alpha_C=0.05)
    assert float(c.loss(n, d)) == pytest.approx((2.6784e28 / (6 * n * d)) ** 0.05)
    joint = KaplanJointLaw(N_c=8.8e13, alpha_N=0.076, D_c=5.4e13, alpha_D=0.095)
    expected = ((8.8e13 / n) ** (0.076 / 0.095) + 5.4e13 / d) ** 0.095
    assert float(joint.loss(n, d)) == pytest.approx(expected, rel=1e-12)


def test_huge_counts_neither_overflow_nor_lose_precision():
    law = ChinchillaLaw(E=1.8, A=480.0, B=2100.0, alpha=0.35, beta=0.37)
    loss = law.loss(np.array([1e13, 1e15]), np.array([1e13, 1e16]))
    assert np.all(np.isfinite(loss)) and np.all(loss > 1.8)
    joint = KaplanJointLaw(N_c=8.8e13, alpha_N=0.076, D_c=5.4e13, alpha_D=0.095)
    assert np.isfinite(joint.loss(1e15, 1e18))


@pytest.mark.parametrize(
    "law",
    [
        HOFFMANN,
        KaplanParamsLaw(8.8e13, 0.076),
        KaplanTokensLaw(5.4e13, 0.095, E=1.2),
        KaplanComputeLaw(2.6784e28, 0.05),
        KaplanJointLaw(8.8e13, 0.076, 5.4e13, 0.095),
        KaplanLaw(**KAPLAN_ROW),
        AllocationLaw(params_exp=0.5, params_coef=0.1),
        AllocationLaw(tokens_exp=0.53, tokens_coef=0.29, extra=(("tokens_exp_low", 0.5),)),
        TokensPerParamLaw(20.0),
    ],
)
def test_law_round_trips_through_parameters(law):
    again = law_from_parameters(law.form, law.parameters())
    assert again == law


def test_kaplan_dataset_row_maps_to_a_law_without_allocation():
    law = law_from_parameters("kaplan", KAPLAN_ROW)
    assert law.exponents == (0.73, 0.27)
    assert float(law.loss(1e9, 1e10)) == pytest.approx(
        float(law.joint_law.loss(1e9, 1e10)), rel=1e-15
    )
    assert law.compute_law.C_c == 2.6784e28
    with pytest.raises(AllocationUnavailableError, match="without a coefficient"):
        law.allocation(1e21)
    with pytest.raises(AllocationUnavailableError):
        KaplanParamsLaw(8.8e13, 0.076).allocation(1e21)


def test_allocation_law_forms():
    # Llama 3 style: only tokens are published; N follows from C = 6 N D.
    llama = law_from_parameters("allocation", {"tokens_exp": 0.53, "tokens_coef": 0.29})
    opt = llama.allocation(3.8e25)
    assert float(opt.tokens) == pytest.approx(0.29 * 3.8e25**0.53)
    assert float(6 * opt.params * opt.tokens) == pytest.approx(3.8e25)
    assert llama.exponents == (pytest.approx(0.47), 0.53)
    # Hoffmann approach 1/2: exponents only, with interval bounds.
    h = law_from_parameters(
        "allocation", {"params_exp": 0.5, "params_exp_low": 0.488, "tokens_exp": 0.5}
    )
    assert dict(h.extra) == {"params_exp_low": 0.488}
    with pytest.raises(AllocationUnavailableError, match="only the exponents"):
        h.allocation(1e21)
    # DeepSeek: FLOPs per token M_opt = 0.1715 C^0.5243, D_opt = 5.8316 C^0.4757.
    ds = law_from_parameters(
        "allocation",
        {
            "flops_per_token_coef": 0.1715,
            "flops_per_token_exp": 0.5243,
            "tokens_coef": 5.8316,
            "tokens_exp": 0.4757,
        },
    )
    o = ds.allocation(1e24)
    assert float(o.params) == pytest.approx(0.1715 * 1e24**0.5243 / 6)
    assert float(o.tokens) == pytest.approx(5.8316 * 1e24**0.4757)


def test_law_from_parameters_errors():
    with pytest.raises(UnknownLawError, match="unknown law form `nope`"):
        law_from_parameters("nope", {})
    with pytest.raises(UnknownLawError, match="needs parameter"):
        law_from_parameters("chinchilla", {"E": 1.0})
    with pytest.raises(UnknownLawError, match="unknown parameter"):
        law_from_parameters("kaplan_n", {"N_c": 1.0, "alpha_N": 0.1, "gamma": 2.0})
