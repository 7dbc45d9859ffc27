"""Reproductions: each study's paper claims, recomputed from its runs in the store.

One function per study (:data:`REPRODUCTIONS`) reads the study's runs, refits what the paper
fitted, and returns :class:`Claim` rows; ``scalefit reproduce NAME`` prints them and the refresh
writes them all to ``reports/reproductions.parquet`` (columns: ``schemas/studies.py``), with
one plot per study (observed against predicted, the held-out runs marked).

- ``gadre2024`` (Gadre et al. 2024, arXiv:2403.08540, Section 3 and their code,
  ``scaling/shared.py:fit_ds`` at the pinned commit): for each corpus, the over-training law
  fitted to the paper's default configuration (the four small models at M = 20 plus the 11M
  model at M = 320; C4-eval loss) predicts the held-out 1.4B and 6.9B runs (nine); the
  downstream law fitted on (loss, 17-task average top-1 error) of those five runs plus the 1.4B
  run at M = 20 turns each predicted loss into a predicted error (six held-out runs). ``M`` is
  tokens per parameter (the paper's "token multiplier"; M = 20 is ``chinchilla_multiplier`` 1).
- ``besiroglu2024`` (arXiv:2404.10102): the Chinchilla refit on the 240 points the authors keep
  (the 5 highest losses dropped) against their published estimates, and the summed Huber
  objective at Hoffmann et al.'s published estimates against the refit's.
- Beyond the papers, on each study: every registered loss form (:data:`scalefit.fit.FORMS`)
  fitted on one training split, predicting the same held-out runs, with bootstrap intervals.
  Gadre: the split is every run of the four small models (all M), the held-out runs the nine
  above. Besiroglu: the points below 1e21 FLOPs, held out the ones at or above.

Scalefit fits every form as Hoffmann et al. did (summed Huber loss of log residuals, delta 1e-3,
a grid of starts; :func:`scalefit.fit.fit_law`), whereas Gadre et al. fitted by least squares
on the losses themselves (``scipy.optimize.curve_fit``): on five points and four parameters the
two objectives give slightly different laws, so predictions differ from the paper's in the
third digit; the tests pin ours and compare with the figures the paper prints.

``relative_error`` is ``|predicted - observed| / observed`` for predictions (the paper's
definition) and ``|refit - paper| / |paper|`` for estimates; ``paper`` is the paper's printed
figure for the claim: the relative error it reports for a prediction, or the estimate itself.
"""

from __future__ import annotations

import itertools
import json
import logging
import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import polars as pl

from .. import fit as fitting
from .. import store
from ..errors import FitError
from ..studies import Study

log = logging.getLogger(__name__)

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

LOSS_FORMS = tuple(name for name, form in fitting.FORMS.items() if form.target == "loss")
"""Every registered form that predicts a loss from parameters and tokens."""

BESIROGLU_HOLDOUT_FLOPS = 1e21
"""Beyond the paper on ``besiroglu2024``: points at or above this compute are held out."""


@dataclass(frozen=True, slots=True)
class Claim:
    """One recomputed claim; :meth:`to_json` is the shape ``scalefit reproduce --json`` prints."""

    study: str
    claim: str
    dataset: str | None
    run: str | None
    quantity: str
    observed: float | None
    predicted: float | None
    relative_error: float | None
    paper: float | None
    form: str | None = None
    method: str = "huber_log"
    """``huber_log`` (scalefit's driver) or ``least_squares`` (the paper's own code)."""
    split: str = "paper"
    """``paper`` (the paper's own claim) or ``beyond`` (every form on one split)."""
    n_train: int | None = None
    ci_low: float | None = None
    ci_high: float | None = None
    held_out: bool = True

    def to_json(self) -> dict[str, Any]:
        """``{"claim", "dataset", "run", "quantity", "observed", "predicted",
        "relative_error", "paper"}`` (NaN as null)."""
        keys = ("claim", "dataset", "run", "quantity", "observed", "predicted")
        out = {k: _clean(getattr(self, k)) for k in keys}
        out["relative_error"] = _clean(self.relative_error)
        out["paper"] = _clean(self.paper)
        return out


def _clean(value: Any) -> Any:
    if isinstance(value, float | np.floating):
        value = float(value)
        return value if math.isfinite(value) else None
    return value


@dataclass(frozen=True, slots=True)
class Reproduction:
    """A study's claims and the points of its observed-vs-predicted plot."""

    study: str
    claims: list[Claim]
    plot: pl.DataFrame
    """``dataset, run, quantity, observed, predicted, held_out`` (a run the claims predict),
    ``fitted`` (a run the plotted law was fitted to) of the plotted fit."""

    def to_json(self) -> dict[str, Any]:
        """``{"study": NAME, "claims": [...]}``."""
        return {"study": self.study, "claims": [c.to_json() for c in self.claims]}

    def frame(self) -> pl.DataFrame:
        """The claims as rows of ``reproductions.parquet`` (``schemas/studies.py``)."""
        from ..schemas.studies import ReproductionSchema

        rows = [asdict(c) for c in self.claims]
        for r in rows:
            for k, v in r.items():
                r[k] = _clean(v)
        cols = list(ReproductionSchema.to_schema().columns)
        schema = {
            c: (
                pl.Float64
                if c in ("observed", "predicted", "relative_error", "paper", "ci_low", "ci_high")
                else pl.Int64
                if c == "n_train"
                else pl.Boolean
                if c == "held_out"
                else pl.String
            )
            for c in cols
        }
        return pl.DataFrame(rows, schema=schema).select(cols)


def _rel(predicted: float | None, observed: float | None) -> float | None:
    if predicted is None or observed is None or not observed:
        return None
    return abs(predicted - observed) / abs(observed)


def huber_objective(law: Any, data: pl.DataFrame, delta: float = 1e-3) -> float:
    """The summed Huber loss (threshold ``delta``) of ``log law.loss(N, D) - log L`` over
    ``data`` (``params``, ``tokens``, ``loss``): the objective of Hoffmann et al.'s approach 3,
    at any law's parameters (e.g. published ones)."""
    pred = np.asarray(law.loss(data["params"].to_numpy(), data["tokens"].to_numpy()))
    r = np.abs(np.log(pred) - np.log(data["loss"].to_numpy()))
    return float(np.where(r <= delta, 0.5 * r * r, delta * (r - 0.5 * delta)).sum())


def _fit(data: pl.DataFrame, form: str, **kw: Any) -> fitting.LawFit:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", fitting.ConvergenceWarning)
        return fitting.fit_law(data, law=form, **kw)


def _beyond(
    study: str,
    train: pl.DataFrame,
    test: pl.DataFrame,
    *,
    split: str,
    n_bootstrap: int,
    seed: int,
    forms: Sequence[str] = LOSS_FORMS,
    dataset: str | None = None,
) -> list[Claim]:
    """Every form fitted on ``train``; a claim per held-out run of ``test``."""
    out: list[Claim] = []
    n, d = test["params"].to_numpy(), test["tokens"].to_numpy()
    for form in forms:
        try:
            fitted = _fit(train, form, n_bootstrap=n_bootstrap, seed=seed)
        except FitError as exc:
            log.warning("%s: %s not fitted on %s: %s", study, form, split, exc)
            continue
        pred = np.asarray(fitted.law.loss(n, d), dtype=float)
        low = high = np.full(pred.shape, np.nan)
        if n_bootstrap:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                try:
                    low, high = fitted.predict_interval(n, d)
                except FitError:
                    pass
        for i, row in enumerate(test.iter_rows(named=True)):
            p = float(pred[i])
            out.append(
                Claim(
                    study=study,
                    claim=f"beyond the paper: {form} fitted to {split}",
                    dataset=dataset,
                    run=row["run"],
                    quantity="loss",
                    observed=row["loss"],
                    predicted=p,
                    relative_error=_rel(p, row["loss"]),
                    paper=None,
                    form=form,
                    split="beyond",
                    n_train=train.height,
                    ci_low=float(low[i]),
                    ci_high=float(high[i]),
                )
            )
    return out


# --------------------------------------------------------------------------------------------
# gadre2024


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


def _paper_code_fits(
    train: pl.DataFrame, ds_train: pl.DataFrame
) -> tuple[Callable[[Any, Any], Any], Callable[[Any], Any]]:
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
        pts = points.filter(pl.col("dataset") == dataset)
        small = pl.col("model").is_in(list(GADRE_SMALL))
        default = (small & (pl.col("cc_mult") == 1.0)) | (
            (pl.col("model") == GADRE_SMALL[0]) & (pl.col("cc_mult") == 16.0)
        )
        train = pts.filter(default)
        held = pts.filter(pl.col("model").is_in(list(GADRE_HELD_OUT)))
        if train.height != 5:
            raise FitError(
                f"{study.name}/{dataset}: the default configuration needs 5 runs, found "
                f"{train.height} (is a run file quarantined? see the `quarantine` table)"
            )
        one_b = held.filter((pl.col("model") == GADRE_HELD_OUT[0]) & (pl.col("cc_mult") == 1.0))
        ds_train = pl.concat([train, one_b]).select("run", "loss", pl.col("error").cast(pl.Float64))
        if ds_train["error"].null_count():
            raise FitError(f"{study.name}/{dataset}: a run of the downstream fit lacks its tasks")
        law = _fit(train, "overtraining").law
        ds_law = _fit(ds_train, "downstream_error").law
        fits = {
            "huber_log": (law.loss, ds_law.error, "scalefit: summed Huber of log residuals"),
            "least_squares": (
                *_paper_code_fits(train, ds_train),
                "the paper's code: least squares on the values",
            ),
        }
        for method, (loss_fn, error_fn, how) in fits.items():
            pred_loss = np.asarray(
                loss_fn(held["params"].to_numpy(), held["tokens"].to_numpy()), dtype=float
            )
            for row, p in zip(held.iter_rows(named=True), pred_loss, strict=True):
                claims.append(
                    Claim(
                        study=study.name,
                        claim="held-out C4-eval loss, over-training law on the default "
                        f"configuration (4 small models at M=20 + 11M at M=320; {how})",
                        dataset=dataset,
                        run=row["run"],
                        quantity="loss",
                        observed=row["loss"],
                        predicted=float(p),
                        relative_error=_rel(float(p), row["loss"]),
                        paper=figures.get((row["run"], "loss")),
                        form="overtraining",
                        method=method,
                        n_train=train.height,
                    )
                )
            for row, p in zip(held.iter_rows(named=True), pred_loss, strict=True):
                if row["run"] in set(one_b["run"]) or row["error"] is None:
                    continue
                err = float(error_fn(p))
                claims.append(
                    Claim(
                        study=study.name,
                        claim="held-out 17-task average top-1 error, downstream law on the "
                        f"default configuration + 1.4B at M=20, at the predicted loss ({how})",
                        dataset=dataset,
                        run=row["run"],
                        quantity="downstream_error",
                        observed=row["error"],
                        predicted=err,
                        relative_error=_rel(err, row["error"]),
                        paper=figures.get((row["run"], "downstream_error")),
                        form="downstream_error",
                        method=method,
                        n_train=ds_train.height,
                    )
                )
        all_pred = law.loss(pts["params"].to_numpy(), pts["tokens"].to_numpy())
        plot_rows.append(
            pts.select(
                "dataset",
                "run",
                pl.lit("loss").alias("quantity"),
                pl.col("loss").alias("observed"),
                pl.Series("predicted", np.asarray(all_pred, dtype=float)),
                pl.col("model").is_in(list(GADRE_HELD_OUT)).alias("held_out"),
                default.alias("fitted"),
            )
        )
        claims += _beyond(
            study.name,
            pts.filter(small),
            held,
            split="every run of the four small models",
            n_bootstrap=n_bootstrap,
            seed=seed,
            dataset=dataset,
        )
    return Reproduction(study.name, claims, pl.concat(plot_rows))


# --------------------------------------------------------------------------------------------
# besiroglu2024


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
    from ..laws import ChinchillaLaw

    pts = besiroglu_points(con, study.name)
    if pts.is_empty():
        raise FitError(f"{study.name}: no runs loaded: run `scalefit studies load {study.name}`")
    refit = _fit(pts, "chinchilla", n_bootstrap=n_bootstrap, seed=seed)
    claims: list[Claim] = []
    for c in study.claims:
        q = c.get("quantity")
        if q not in refit.estimates:
            continue
        value = refit.estimates[q]
        lo, hi = refit.ci.get(q, (None, None))
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
    hoffmann = ChinchillaLaw(**{k: float(v) for k, v in study.extra["hoffmann2022"].items()})
    at_hoffmann = huber_objective(hoffmann, pts)
    at_refit = huber_objective(refit.law, pts)
    for label, quantity, value in (
        (
            "objective at Hoffmann et al.'s published estimates",
            "objective_at_hoffmann2022",
            at_hoffmann,
        ),
        ("objective at the refit", "objective_at_refit", at_refit),
    ):
        claims.append(
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
        )
    big = pl.col("flops") >= BESIROGLU_HOLDOUT_FLOPS
    train, test = pts.filter(~big), pts.filter(big)
    claims += _beyond(
        study.name,
        train,
        test,
        split=f"the points below {BESIROGLU_HOLDOUT_FLOPS:.0e} FLOPs",
        n_bootstrap=n_bootstrap,
        seed=seed,
    )
    chin = _fit(train, "chinchilla").law
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


REPRODUCTIONS: dict[str, Callable[..., Reproduction]] = {
    "gadre2024": reproduce_gadre2024,
    "besiroglu2024": reproduce_besiroglu2024,
}
"""The reproduction of each study, by study name (a study without one has no claims)."""


def reproduce(con: Any, study: Study, *, n_bootstrap: int = 100, seed: int = 0) -> Reproduction:
    """Recompute ``study``'s claims from its runs in the store (load it first).

    Raises
    ------
    FitError
        The study has no reproduction, or its runs are not loaded.
    """
    fn = REPRODUCTIONS.get(study.name)
    if fn is None:
        raise FitError(f"{study.name}: no reproduction is registered for this study")
    return fn(con, study, n_bootstrap=n_bootstrap, seed=seed)


def settings_sha256(n_bootstrap: int, seed: int) -> str:
    """What, besides the data, shapes a reproduction (for the report's input hash)."""
    import hashlib

    import scalefit

    blob = {"n_bootstrap": n_bootstrap, "seed": seed, "version": scalefit.__version__}
    return hashlib.sha256(json.dumps(blob, sort_keys=True).encode()).hexdigest()


def paper_table(frame: pl.DataFrame) -> pl.DataFrame:
    """The papers' claims, one per row, as the refresh and the README print them."""
    return frame.filter(pl.col("split") == "paper").select(
        "study",
        "dataset",
        pl.coalesce("run", pl.lit("")).alias("run"),
        "quantity",
        "method",
        "observed",
        "predicted",
        "relative_error",
        "paper",
    )


def beyond_table(frame: pl.DataFrame) -> pl.DataFrame:
    """Beyond the papers: per study, dataset and form, the mean and max relative error over
    the held-out runs and how many observed values fall inside the 95% bootstrap interval of
    the prediction; best form first."""
    inside = (pl.col("observed") >= pl.col("ci_low")) & (pl.col("observed") <= pl.col("ci_high"))
    return (
        frame.filter(pl.col("split") == "beyond")
        .group_by("study", "dataset", "form", maintain_order=True)
        .agg(
            pl.col("n_train").first(),
            pl.len().alias("held_out"),
            pl.col("relative_error").mean().alias("mean_rel_error"),
            pl.col("relative_error").max().alias("max_rel_error"),
            inside.sum().cast(pl.Int64).alias("in_95ci"),
        )
        .sort("study", "dataset", "mean_rel_error", nulls_last=True)
    )


__all__ = [
    "GADRE_SUBSET",
    "LOSS_FORMS",
    "REPRODUCTIONS",
    "Claim",
    "Reproduction",
    "besiroglu_points",
    "beyond_table",
    "gadre_points",
    "huber_objective",
    "paper_table",
    "reproduce",
]
