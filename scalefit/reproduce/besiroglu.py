"""Besiroglu et al. (2024), arXiv:2404.10102: the Chinchilla refit on the 240 points the
authors keep against their published estimates, the summed Huber objective at Hoffmann et
al.'s published estimates against the refit's, and every loss form beyond the paper (see
:mod:`scalefit.reproduce`)."""

from __future__ import annotations

from typing import Any

import numpy as np
import polars as pl

from .. import fit as fitting
from .. import store
from ..errors import FitError
from ..laws import ChinchillaLaw
from ..load.studies import Study
from .claims import (
    Claim,
    Reproduction,
    beyond_the_paper,
    fit_quietly,
    huber_objective,
    loss_law,
)

BESIROGLU_HOLDOUT_FLOPS = 1e21
"""Beyond the paper on ``besiroglu2024``: points at or above this compute are held out."""


def besiroglu_points(con: Any, study: str = "besiroglu2024") -> pl.DataFrame:
    """The study's points (``run``, ``params``, ``tokens``, ``flops``, ``loss``), without the
    five highest losses, as the authors' notebook (``loss < sorted(loss)[-5]``)."""
    sql = """
        SELECT json_extract_string(r.config, '$.run') AS run, r.params, r.tokens, r.flops,
               o.value AS loss
        FROM runs r JOIN observations o USING (run_id)
        WHERE starts_with(r.run_id, ?) AND o.metric = 'loss'
        ORDER BY CAST(json_extract_string(r.config, '$.run') AS INTEGER)
    """
    pts = store.query(con, sql, [f"{study}:"])
    if pts.height < 6:
        return pts
    cutoff = np.sort(pts["loss"].to_numpy())[-5]
    return pts.filter(pl.col("loss") < cutoff)


def reproduce_besiroglu2024(
    con: Any, study: Study, *, n_bootstrap: int = 100, seed: int = 0
) -> Reproduction:
    """The Chinchilla refit against Besiroglu et al.'s estimates, the objective at Hoffmann et
    al.'s estimates against the refit's, and every form beyond the paper."""
    pts = besiroglu_points(con, study.name)
    if pts.is_empty():
        raise FitError(f"{study.name}: no runs loaded: run `scalefit studies load {study.name}`")
    refit = fit_quietly(pts, "chinchilla", n_bootstrap=n_bootstrap, seed=seed)
    claims = _estimate_claims(study, refit) + _objective_claims(study, pts, refit.law)
    big = pl.col("flops") >= BESIROGLU_HOLDOUT_FLOPS
    train, test = pts.filter(~big), pts.filter(big)
    claims += beyond_the_paper(
        study.name,
        train,
        test,
        split=f"the points below {BESIROGLU_HOLDOUT_FLOPS:.0e} FLOPs",
        n_bootstrap=n_bootstrap,
        seed=seed,
    )
    chin = loss_law(fit_quietly(train, "chinchilla"))
    plot = pts.select(
        pl.lit(None, pl.String).alias("dataset"),
        "run",
        pl.lit("loss").alias("quantity"),
        pl.col("loss").alias("observed"),
        pl.Series("predicted", np.asarray(chin.loss(pts["params"], pts["tokens"]), dtype=float)),
        big.alias("held_out"),
        (~big).alias("fitted"),
    )
    return Reproduction(study.name, claims, plot)


def _estimate_claims(study: Study, refit: fitting.LawFit) -> list[Claim]:
    """The refit's estimate of each parameter the paper prints, with its interval."""
    claims = []
    for c in study.claims:
        q = c.get("quantity")
        if not isinstance(q, str) or q not in refit.estimates:
            continue
        value = refit.estimates[q]
        lo, hi = refit.ci[q] if q in refit.ci else (None, None)
        claims.append(
            Claim(
                study=study.name,
                claim="Chinchilla refit (summed Huber, delta 1e-3, Hoffmann's grid) vs the "
                "paper's estimate",
                dataset=None,
                run=None,
                quantity=q,
                observed=None,
                predicted=value,
                relative_error=abs(value - c["paper"]) / abs(c["paper"]),
                paper=float(c["paper"]),
                form="chinchilla",
                n_train=refit.n_points,
                ci_low=lo,
                ci_high=hi,
                held_out=False,
            )
        )
    return claims


def _objective_claims(study: Study, pts: pl.DataFrame, refit: Any) -> list[Claim]:
    """The summed Huber objective on ``pts`` at Hoffmann et al.'s published estimates and
    at the ``refit`` law: the refit must be at least as low."""
    hoffmann = ChinchillaLaw(**{k: float(v) for k, v in study.extra["hoffmann2022"].items()})
    at = {
        "objective_at_hoffmann2022": (
            "objective at Hoffmann et al.'s published estimates",
            huber_objective(hoffmann, pts),
        ),
        "objective_at_refit": ("objective at the refit", huber_objective(refit, pts)),
    }
    return [
        Claim(
            study=study.name,
            claim=label + " (summed Huber of log residuals, delta 1e-3)",
            dataset=None,
            run=None,
            quantity=quantity,
            observed=None,
            predicted=value,
            relative_error=None,
            paper=None,
            form="chinchilla",
            n_train=pts.height,
            held_out=False,
        )
        for quantity, (label, value) in at.items()
    ]
