"""Names the command line shows before any heavy module is imported.

``scalefit --help`` and ``scalefit fit --help`` list the law names; importing
:mod:`scalefit.fit` (numpy, polars, scipy) for that took most of a second. This module
imports nothing.
"""

from __future__ import annotations

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
"""Law names of the CLI and ``scalefit.toml`` -> fitted form (:func:`scalefit.fit.fit_named`)."""
