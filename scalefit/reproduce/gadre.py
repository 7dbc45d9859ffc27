"""Gadre et al. (2024), arXiv:2403.08540: for each corpus, the over-training law fitted to
the paper's default configuration predicts the held-out runs' loss, and the downstream law
turns each predicted loss into a predicted error; scalefit's fit and the paper's own
least-squares code side by side, then every loss form beyond the paper (see
:mod:`scalefit.reproduce`)."""

from __future__ import annotations

import itertools
import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import polars as pl

from .. import store
from ..errors import FitError
from ..laws import DownstreamErrorLaw, LossLaw
from ..load.studies import Study
from .claims import Claim, Reproduction, beyond_the_paper, fit_quietly, loss_law, rel_error

GADRE_SUBSET = (
    "bigbench_operators",
    "pubmed_qa_labeled",
    "hellaswag_zeroshot",
    "boolq",
    "arc_easy",
    "coqa",
    "bigbench_dyck_languages",
    "lambada_openai",
    "bigbench_novel_concepts",
    "winograd",
    "bigbench_cs_algorithms",
    "commonsense_qa",
    "bigbench_qa_wikidata",
    "hellaswag",
    "copa",
    "squad",
    "piqa",
)
"""The 17 downstream tasks of the paper's average error (``SUBSET`` in
``scaling/constants.py`` of mlfoundations/scaling at commit a003c49)."""

GADRE_SMALL = ("d=96_l=8_h=4", "d=512_l=8_h=4", "d=576_l=24_h=8", "d=1024_l=24_h=8")
"""The four small models (0.011B, 0.079B, 0.154B, 0.411B) of the default configuration."""
GADRE_HELD_OUT = ("open_lm_1b", "open_lm_7b")
"""The models the default configuration predicts (1.4B, 6.9B)."""

_LossFn = Callable[[Any, Any], Any]
"""``(N, D) -> loss``"""
_ErrorFn = Callable[[Any], Any]
"""``loss -> downstream error``"""


def gadre_points(con: Any, study: str = "gadre2024") -> pl.DataFrame:
    """One row per loaded run of the testbed: ``run`` (the study's name), ``dataset``,
    ``model``, ``multiplier`` (tokens per parameter), ``params``, ``tokens``, ``loss`` (C4 eval)
    and ``error`` (17-task average top-1 error; null if a task is missing)."""
    tasks = ", ".join(f"'accuracy:{t}'" for t in GADRE_SUBSET)
    sql = f"""
        WITH r AS (SELECT * FROM runs WHERE starts_with(run_id, ?)),
        l AS (SELECT run_id, value AS loss FROM observations
              WHERE metric = 'eval_loss' AND run_id IN (SELECT run_id FROM r)),
        e AS (SELECT run_id, avg(1 - value) AS error, count(*) AS n_tasks FROM observations
              WHERE metric IN ({tasks}) AND run_id IN (SELECT run_id FROM r) GROUP BY run_id)
        SELECT json_extract_string(r.config, '$.run') AS run,
               json_extract_string(r.config, '$.dataset') AS dataset,
               json_extract_string(r.config, '$.model') AS model,
               r.tokens / r.params AS multiplier,
               CAST(json_extract(r.config, '$.chinchilla_multiplier') AS DOUBLE) AS cc_mult,
               r.params, r.tokens, l.loss,
               CASE WHEN e.n_tasks = {len(GADRE_SUBSET)} THEN e.error END AS error
        FROM r JOIN l USING (run_id) LEFT JOIN e USING (run_id)
        ORDER BY dataset, params, tokens
    """
    return store.query(con, sql, [f"{study}:"])


def _gadre_paper_figures(study: Study) -> dict[tuple[str, str], float]:
    return {
        (c["run"], c["quantity"]): float(c["paper_relative_error"])
        for c in study.claims
        if "run" in c and "paper_relative_error" in c
    }


def _paper_code_fits(train: pl.DataFrame, ds_train: pl.DataFrame) -> tuple[_LossFn, _ErrorFn]:
    """The paper's own fits (``scaling/laws.py`` and ``scaling/shared.py:fit_ds`` of
    mlfoundations/scaling at the pinned commit), for comparison: ``scipy.optimize.curve_fit``
    (least squares on the losses) of ``alpha N^b + beta 6^(b/2) D^b + E`` from their grid of
    128 starts, keeping the smallest residual; then ``E - a exp(-b L)`` on (loss, error) from
    curve_fit's default start. Returns the loss ``(N, D) -> L`` and error ``L -> Err``."""
    from scipy.optimize import curve_fit

    def ours(x: Any, alpha: float, beta: float, b: float, e: float) -> Any:
        n, d = x
        return alpha * np.power(n, b) + beta * np.power(6.0, b / 2) * np.power(d, b) + e

    x = np.array([train["params"].to_numpy(), train["tokens"].to_numpy()])
    y = train["loss"].to_numpy()
    best: tuple[float, Any] | None = None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for p0 in itertools.product(
            (1e2, 3e2, 1e3, 3e3), (1e2, 3e2, 1e3, 3e3), (-0.1, -0.3), (0.0, 1.0, 2.0, 10.0)
        ):
            try:
                popt, _ = curve_fit(ours, x, y, p0=list(p0), maxfev=10000)
            except (RuntimeError, ValueError):
                continue
            rss = float(np.sum((y - ours(x, *popt)) ** 2))
            if math.isfinite(rss) and (best is None or rss < best[0]):
                best = (rss, popt)
        if best is None:
            raise FitError("the paper's least-squares fit found no solution")
        popt_loss = best[1]
        popt_ds, _ = curve_fit(
            lambda t, a, b, e: e - a * np.exp(-b * t),
            ds_train["loss"].to_numpy(),
            ds_train["error"].to_numpy(),
            maxfev=10000,
        )

    def loss_fn(n: Any, d: Any) -> Any:
        return ours(np.array([np.asarray(n, float), np.asarray(d, float)]), *popt_loss)

    def error_fn(loss: Any) -> Any:
        a, b, e = popt_ds
        return e - a * np.exp(-b * np.asarray(loss, float))

    return loss_fn, error_fn


_SMALL = pl.col("model").is_in(list(GADRE_SMALL))
_DEFAULT = (_SMALL & (pl.col("cc_mult") == 1.0)) | (
    (pl.col("model") == GADRE_SMALL[0]) & (pl.col("cc_mult") == 16.0)
)
"""The default configuration: the four small models at M = 20, the 11M model at M = 320."""


@dataclass(frozen=True, slots=True)
class _Corpus:
    """One corpus' runs, split as the paper splits them."""

    study: str
    dataset: str
    runs: pl.DataFrame
    train: pl.DataFrame
    """The default configuration (five runs): what the loss law is fitted to."""
    held: pl.DataFrame
    """The runs of the held-out models, whose loss is predicted."""
    ds_train: pl.DataFrame
    """``run, loss, error`` of the five runs plus the 1.4B run at M = 20: what the
    downstream law is fitted to (the error of its 1.4B run is not a prediction)."""

    @classmethod
    def of(cls, study: str, dataset: str, points: pl.DataFrame) -> _Corpus:
        runs = points.filter(pl.col("dataset") == dataset)
        train = runs.filter(_DEFAULT)
        held = runs.filter(pl.col("model").is_in(list(GADRE_HELD_OUT)))
        if train.height != 5:
            raise FitError(
                f"{study}/{dataset}: the default configuration needs 5 runs, found "
                f"{train.height} (is a run file quarantined? see the `quarantine` table)"
            )
        one_b = held.filter((pl.col("model") == GADRE_HELD_OUT[0]) & (pl.col("cc_mult") == 1.0))
        ds_train = pl.concat([train, one_b]).select("run", "loss", pl.col("error").cast(pl.Float64))
        if ds_train["error"].null_count():
            raise FitError(f"{study}/{dataset}: a run of the downstream fit lacks its tasks")
        return cls(study, dataset, runs, train, held, ds_train)


def reproduce_gadre2024(
    con: Any, study: Study, *, n_bootstrap: int = 100, seed: int = 0
) -> Reproduction:
    """Gadre et al. (2024)'s default-configuration predictions, per corpus, and every form
    beyond the paper (see the module docstring)."""
    points = gadre_points(con, study.name)
    if points.is_empty():
        raise FitError(f"{study.name}: no runs loaded: run `scalefit studies load {study.name}`")
    figures = _gadre_paper_figures(study)
    claims: list[Claim] = []
    plot_rows: list[pl.DataFrame] = []
    for dataset in sorted(points["dataset"].unique().to_list()):
        corpus = _Corpus.of(study.name, dataset, points)
        law = loss_law(fit_quietly(corpus.train, "overtraining"))
        ds_law = fit_quietly(corpus.ds_train, "downstream_error").law
        if not isinstance(ds_law, DownstreamErrorLaw):
            raise FitError(f"a downstream_error fit gave a {ds_law.form} law")
        fits = {
            "huber_log": (law.loss, ds_law.error, "scalefit: summed Huber of log residuals"),
            "least_squares": (
                *_paper_code_fits(corpus.train, corpus.ds_train),
                "the paper's code: least squares on the values",
            ),
        }
        for method, (loss_fn, error_fn, how) in fits.items():
            claims += _held_out_claims(corpus, method, loss_fn, error_fn, how, figures)
        plot_rows.append(_plot_rows(corpus.runs, law))
        claims += beyond_the_paper(
            study.name,
            corpus.runs.filter(_SMALL),
            corpus.held,
            split="every run of the four small models",
            n_bootstrap=n_bootstrap,
            seed=seed,
            dataset=dataset,
        )
    return Reproduction(study.name, claims, pl.concat(plot_rows))


def _held_out_claims(
    corpus: _Corpus,
    method: str,
    loss_fn: _LossFn,
    error_fn: _ErrorFn,
    how: str,
    figures: dict[tuple[str, str], float],
) -> list[Claim]:
    """The claims of one way of fitting (``method``, told as ``how``): each held-out run's
    predicted loss, then each predicted error (at the predicted loss) of the runs outside
    the downstream fit."""
    held = corpus.held
    pred_loss = np.asarray(
        loss_fn(held["params"].to_numpy(), held["tokens"].to_numpy()), dtype=float
    )
    claims = [
        Claim(
            claim="held-out C4-eval loss, over-training law on the default "
            f"configuration (4 small models at M=20 + 11M at M=320; {how})",
            run=row["run"],
            quantity="loss",
            observed=row["loss"],
            predicted=float(p),
            relative_error=rel_error(float(p), row["loss"]),
            paper=figures.get((row["run"], "loss")),
            form="overtraining",
            n_train=corpus.train.height,
            study=corpus.study,
            dataset=corpus.dataset,
            method=method,
        )
        for row, p in zip(held.iter_rows(named=True), pred_loss, strict=True)
    ]
    in_ds_fit = set(corpus.ds_train["run"])
    for row, p in zip(held.iter_rows(named=True), pred_loss, strict=True):
        if row["run"] in in_ds_fit or row["error"] is None:
            continue
        err = float(error_fn(p))
        claims.append(
            Claim(
                claim="held-out 17-task average top-1 error, downstream law on the "
                f"default configuration + 1.4B at M=20, at the predicted loss ({how})",
                run=row["run"],
                quantity="downstream_error",
                observed=row["error"],
                predicted=err,
                relative_error=rel_error(err, row["error"]),
                paper=figures.get((row["run"], "downstream_error")),
                form="downstream_error",
                n_train=corpus.ds_train.height,
                study=corpus.study,
                dataset=corpus.dataset,
                method=method,
            )
        )
    return claims


def _plot_rows(runs: pl.DataFrame, law: LossLaw) -> pl.DataFrame:
    """Every run of a corpus, observed against ``law``'s prediction."""
    predicted = law.loss(runs["params"].to_numpy(), runs["tokens"].to_numpy())
    return runs.select(
        "dataset",
        "run",
        pl.lit("loss").alias("quantity"),
        pl.col("loss").alias("observed"),
        pl.Series("predicted", np.asarray(predicted, dtype=float)),
        pl.col("model").is_in(list(GADRE_HELD_OUT)).alias("held_out"),
        _DEFAULT.alias("fitted"),
    )
