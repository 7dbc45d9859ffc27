"""How well a law fitted without the largest compute budgets predicts them."""

from __future__ import annotations

from typing import Unpack

import numpy as np

from ..errors import FitError
from ..laws import KaplanComputeLaw, LossLaw
from .forms import FORMS, check_form
from .parametric import Starts, fit_form
from .points import PointsLike, as_points, budget_groups
from .result import ExtrapolationScore
from .settings import FitOptions, FitSettings

__all__ = ["extrapolation_score"]


def extrapolation_score(
    data: PointsLike,
    *,
    law: str = "chinchilla",
    holdout: int = 1,
    settings: FitSettings | None = None,
    starts: Starts = None,
    **options: Unpack[FitOptions],
) -> ExtrapolationScore:
    """Refit without the ``holdout`` largest compute budgets and score the predictions there.

    Budgets are groups of points whose FLOPs (``flops`` or ``6 N D``) are within
    ``budget_rtol`` (a setting, default 0.05). ``settings``, ``starts`` and ``options`` are
    the fit's (as :func:`scalefit.fit.fit_law`).

    Returns
    -------
    ExtrapolationScore
        Log-residual RMSE and mean/max absolute relative error of the held-out losses.
    """
    if not isinstance(holdout, int) or holdout < 1:
        raise ValueError(f"`holdout` must be an integer >= 1, got {holdout!r}")
    form = check_form(law)
    if law not in FORMS:
        raise FitError(f"an extrapolation score needs a form of {', '.join(FORMS)}, not {law}")
    s = FitSettings.of(settings, **options)
    pts = as_points(data, need=form.needs)
    groups = budget_groups(pts.flops, s.budget_rtol)
    n_groups = int(groups.max()) + 1
    if n_groups <= holdout:
        raise FitError(f"{n_groups} compute budget(s): cannot hold out {holdout} and still fit")
    test = groups >= n_groups - holdout
    train = pts.take(np.flatnonzero(~test))
    columns = {
        "params": train.params,
        "tokens": train.tokens,
        "flops": train.flops,
        "loss": train.loss,
    }
    fitted = fit_form(columns, form, s, starts=starts)
    law_ = fitted.law
    if isinstance(law_, KaplanComputeLaw):  # the kaplan_c forms: a loss of the points' compute
        pred = np.asarray(law_.loss_at_flops(pts.flops[test]), dtype=float)
    elif isinstance(law_, LossLaw):
        pred = np.asarray(law_.loss(pts.params[test], pts.tokens[test]), dtype=float)
    else:
        raise FitError(f"an extrapolation score needs a loss law, not a {law_.form} law")
    rel = pred / pts.loss[test] - 1.0
    return ExtrapolationScore(
        n_train=int((~test).sum()),
        n_test=int(test.sum()),
        holdout_flops=tuple(sorted({float(f) for f in pts.flops[test]})),
        rmse_log=float(np.sqrt(np.mean(np.log(pred / pts.loss[test]) ** 2))),
        mean_abs_rel_error=float(np.mean(np.abs(rel))),
        max_abs_rel_error=float(np.max(np.abs(rel))),
        fit=fitted,
    )
