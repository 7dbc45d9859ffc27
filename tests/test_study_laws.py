"""The laws the published studies need, as registered forms of the one fitting driver:
Gadre et al. (2024)'s over-training law and their downstream-error law."""

from __future__ import annotations

import math

import numpy as np
import polars as pl
import pytest

from scalefit.fit import FORMS, LAW_NAMES, fit_law
from scalefit.laws import DownstreamErrorLaw, OvertrainingLaw, law_from_parameters

OT_TRUE = {"E": 1.9, "A": 300.0, "B": 900.0, "eta": 0.3}
DS_TRUE = {"epsilon": 0.85, "k": 6.0, "gamma": 1.1}


def overtraining_data(seed: int | None = None, sigma: float = 0.01) -> pl.DataFrame:
    """A grid like the testbed's: five sizes x six multipliers, lognormal noise."""
    law = OvertrainingLaw(**OT_TRUE)
    n, m = np.meshgrid(np.geomspace(1e7, 4e8, 5), [5.0, 10.0, 20.0, 80.0, 320.0, 640.0])
    n, m = n.ravel(), m.ravel()
    loss = law.loss(n, n * m)
    if seed is not None:
        loss = loss * np.exp(np.random.default_rng(seed).normal(0.0, sigma, loss.size))
    return pl.DataFrame({"params": n, "tokens": n * m, "loss": loss})


def downstream_data(seed: int | None = None, sigma: float = 0.01) -> pl.DataFrame:
    law = DownstreamErrorLaw(**DS_TRUE)
    loss = np.linspace(2.4, 4.6, 14)
    err = law.error(loss)
    if seed is not None:
        err = err * np.exp(np.random.default_rng(seed).normal(0.0, sigma, err.size))
    return pl.DataFrame({"loss": loss, "error": err})


def test_registered_once_with_their_law_types() -> None:
    assert FORMS["overtraining"].names == ("E", "A", "B", "eta")
    assert FORMS["downstream_error"].names == ("epsilon", "k", "gamma")
    assert LAW_NAMES["overtraining"] == "overtraining"
    assert LAW_NAMES["downstream-error"] == "downstream_error"
    law = law_from_parameters("overtraining", OT_TRUE)
    assert isinstance(law, OvertrainingLaw)
    assert law_from_parameters(law.form, law.parameters()) == law
    ds = law_from_parameters("downstream_error", DS_TRUE)
    assert law_from_parameters(ds.form, ds.parameters()) == ds


def test_overtraining_law_by_hand() -> None:
    """L(N, D) = E + A N^-eta + B D^-eta; the paper's (C, M) reading gives the same value;
    the optimal tokens per parameter is (B/A)^(1/eta) at every budget."""
    law = OvertrainingLaw(**OT_TRUE)
    n, d = 1e8, 2e9
    by_hand = 1.9 + 300.0 * 1e8**-0.3 + 900.0 * 2e9**-0.3
    assert float(law.loss(n, d)) == pytest.approx(by_hand, rel=1e-12)
    assert float(law.loss_at_multiplier(6 * n * d, d / n)) == pytest.approx(by_hand, rel=1e-12)
    alloc = law.allocation(1e21)
    assert float(alloc.tokens_per_param) == pytest.approx(3.0 ** (1 / 0.3), rel=1e-9)
    assert 6 * float(alloc.params) * float(alloc.tokens) == pytest.approx(1e21, rel=1e-9)


def test_downstream_law_by_hand() -> None:
    law = DownstreamErrorLaw(**DS_TRUE)
    assert float(law.error(3.0)) == pytest.approx(0.85 - 6.0 * math.exp(-3.3), rel=1e-12)


def test_overtraining_recovers_noise_free_parameters() -> None:
    """Measured: every estimate within 1e-11 relative; pinned at 1e-6 (well under the
    guide's few parts in a thousand)."""
    fit = fit_law(overtraining_data(), law="overtraining")
    assert fit.converged
    for name, value in OT_TRUE.items():
        assert fit.estimates[name] == pytest.approx(value, rel=1e-6), name
    assert fit.derived["tokens_per_param"] == pytest.approx(3.0 ** (1 / 0.3), rel=1e-5)


def test_downstream_recovers_noise_free_parameters() -> None:
    """Measured: within 1e-12 relative; pinned at 1e-6."""
    fit = fit_law(downstream_data(), law="downstream_error")
    assert fit.converged
    for name, value in DS_TRUE.items():
        assert fit.estimates[name] == pytest.approx(value, rel=1e-6), name
    assert fit.law.error(3.0) == pytest.approx(DownstreamErrorLaw(**DS_TRUE).error(3.0))


@pytest.mark.parametrize(
    ("law", "data", "truth"),
    [("overtraining", overtraining_data, OT_TRUE), ("downstream_error", downstream_data, DS_TRUE)],
)
def test_bootstrap_intervals_cover_the_truth(law, data, truth) -> None:
    """95% intervals over 8 seeded noisy draws (1% lognormal noise): each parameter covered
    in at least 6 (true coverage 95% gives 7 or more in ~94% of such seeds)."""
    covered = dict.fromkeys(truth, 0)
    draws = 8
    for seed in range(draws):
        fit = fit_law(data(seed), law=law, n_bootstrap=120, seed=seed)
        assert fit.converged
        assert fit.diagnostics["bootstrap_not_converged"] <= 2
        for name, value in truth.items():
            lo, hi = fit.ci[name]
            covered[name] += lo <= value <= hi
    assert all(c >= draws - 2 for c in covered.values()), covered


def test_downstream_error_needs_an_error_column() -> None:
    from scalefit.errors import FitError

    with pytest.raises(FitError, match="`error`"):
        fit_law(pl.DataFrame({"loss": [3.0, 3.5, 4.0, 4.5]}), law="downstream_error")
