"""The words scalefit uses for kinds of things: the only lists of law forms, fit procedures,
law names, point modes, log formats and upstream kinds.

Every other list is built from these (the ``isin`` checks of the schemas, the law registry of
:mod:`scalefit.laws`, the command line's choices, the settings' checks), and
``tests/test_registry.py`` fails when they disagree. This module imports nothing: the command
line reads it to print ``--help`` before numpy, polars or pandera are loaded.
"""

from __future__ import annotations

LAW_FORMS: tuple[str, ...] = (
    "chinchilla",
    "kaplan",
    "kaplan_n",
    "kaplan_d",
    "kaplan_c",
    "kaplan_nd",
    "allocation",
    "tokens_per_param",
    "data_constrained",
    "overtraining",
    "downstream_error",
)
"""Law types (``laws.form``): one record each in the registry of :mod:`scalefit.laws`.

A law form says what a law is (its formula and parameters), not how it was obtained: an
IsoFLOP or envelope fit yields an ``allocation`` law (see :data:`PROCEDURES`)."""

PROCEDURES: tuple[str, ...] = ("parametric", "isoflop", "envelope")
"""How a law is fitted: ``parametric`` fits a law form's formula to the points (Huber loss in
log space; Hoffmann et al. 2022's approach 3); ``isoflop`` (approach 2) and ``envelope``
(approach 1) fit an ``allocation`` law to the compute-optimal points they find."""

PARAMETRIC_FORMS: tuple[str, ...] = (
    "chinchilla",
    "kaplan_n",
    "kaplan_d",
    "kaplan_c",
    "kaplan_nd",
    "data_constrained",
    "overtraining",
    "downstream_error",
)
"""The law forms the ``parametric`` procedure fits (:func:`scalefit.fit.fit_named`)."""

LAW_NAMES: dict[str, str] = {
    "chinchilla": "chinchilla",
    "kaplan-n": "kaplan_n",
    "kaplan-d": "kaplan_d",
    "kaplan-c": "kaplan_c",
    "kaplan-nd": "kaplan_nd",
    "isoflop": "isoflop",
    "envelope": "envelope",
    "data-constrained": "data_constrained",
    "overtraining": "overtraining",
    "downstream-error": "downstream_error",
}
"""Law names of the command line (``--law``) and ``scalefit.toml`` (``[fit] laws``) -> what
they fit: a form of :data:`PARAMETRIC_FORMS` or a procedure of :data:`PROCEDURES`."""

LOG_FORMATS: tuple[str, ...] = ("csv", "jsonl", "parquet", "trainer_state", "wandb")
"""Formats of users' training logs that ``scalefit ingest`` detects (and ``--format`` accepts)."""

LINE_LOG_FORMATS: frozenset[str] = frozenset({"csv", "jsonl", "wandb"})
"""Log formats written line by line: a grown file is read on from its last complete line."""

POINT_MODES: tuple[str, ...] = ("final", "checkpoints", "envelope")
"""Which observations of a run a fit from the store uses (``scalefit fit --points``, ``[fit]
points``): ``final`` (the last one per run), ``checkpoints`` (every one past a warm-up
fraction of the run's tokens), ``envelope`` (of those, the ones on the lower envelope of loss
against compute over all runs: Hoffmann et al. 2022's approach 1)."""

METRIC_PREFERENCE: tuple[str, ...] = (
    "eval_loss",
    "val_loss",
    "validation_loss",
    "valid_loss",
    "loss",
    "train_loss",
)
"""The metric a run contributes to a fit, first found first (``observations.metric`` names):
held-out losses (HF Trainer's ``eval_loss``; nanoGPT-style ``val_loss``, ``validation_loss``,
``valid_loss``), then the generic ``loss`` (a published study's reported loss; HF Trainer's
training loss), then ``train_loss``. Other metrics (e.g. ``eval_<set>_loss``) are used only
when ``scalefit fit --metric`` names them."""

SCHEDULES: tuple[str, ...] = ("constant", "wsd", "cosine")
"""Learning-rate schedules a run can declare (``runs.schedule``; ``schedule`` in run.json or
``scalefit ingest --schedule``): ``constant`` (after warm-up), ``wsd`` (warmup-stable-decay)
and ``cosine`` (decay to the end of a planned horizon). It decides which checkpoints of a
curve can stand for a shorter run: see :class:`schemas.runs.RunSchema`'s ``schedule``."""

UPSTREAM_KINDS: tuple[str, ...] = ("runs", "models")
"""``kind`` of an upstream file (``[upstreams.<name>]`` of ``datasets/sources.toml``): ``runs``
are published loss points (-> ``runs`` + ``observations``); ``models`` a model database
(-> ``upstream_models`` + ``upstream_changes``)."""

UPSTREAM_FORMATS: tuple[str, ...] = ("csv", "jsonl", "parquet")
"""``format`` of an upstream file (default: from its URL's suffix)."""

__all__ = [
    "LAW_FORMS",
    "LAW_NAMES",
    "LINE_LOG_FORMATS",
    "LOG_FORMATS",
    "METRIC_PREFERENCE",
    "PARAMETRIC_FORMS",
    "POINT_MODES",
    "PROCEDURES",
    "SCHEDULES",
    "UPSTREAM_FORMATS",
    "UPSTREAM_KINDS",
]
