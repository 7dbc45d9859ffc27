"""Names the command line shows before any heavy module is imported.

``scalefit --help`` and ``scalefit fit --help`` list the law names; importing
:mod:`scalefit.fit` (numpy, polars, scipy) for that took most of a second. The names live in
the vocabulary (:mod:`scalefit.schemas.vocabulary`, which imports nothing).
"""

from __future__ import annotations

from .schemas.vocabulary import LAW_NAMES, METRIC_PREFERENCE, POINT_MODES

__all__ = ["DEFAULT_WARMUP", "LAW_NAMES", "METRIC_PREFERENCE", "POINT_MODES"]

DEFAULT_WARMUP = 0.1
"""Fraction of each run's tokens whose checkpoints ``scalefit fit --points checkpoints`` (and
``envelope``) leave out. The start of a run is shaped by the learning-rate warm-up and the
initial transient, which no law in ``N`` and ``D`` describes (a law of the final loss is
fitted, and early checkpoints sit far above it); common recipes warm the learning rate up
over the first 1-5% of the steps, so 10% leaves a margin and keeps 90% of each curve. The
sweep test (tests/test_fit_points.py) recovers its generating law with it."""
