"""PNG plots of the store's contents (matplotlib, no display needed).

Each function takes plain frames and a path, and writes one figure a reader of a paper can
use: a title naming the law, its procedure and its data (never a hash), axes with units,
legends outside the data, one colour per law from a qualitative palette, and the law's
caveat (``laws.caveat``) as a footnote marked ``†`` wherever the law is drawn.

Plots of a fit follow its procedure:

- parametric loss laws (:func:`plot_parametric_fit`, in :mod:`.fits`): the data grouped by
  their own token budgets (or iso-FLOP slices), the law at each group's budget with its
  bootstrap band, and a residual panel;
- IsoFLOP fits (:func:`plot_isoflop_fit`, in :mod:`.allocation`): each budget's parabola
  with its optimum and the optimum's bootstrap interval, and ``N_opt(C)``, ``D_opt(C)``
  with their bands;
- envelope fits (:func:`plot_envelope_fit`, in :mod:`.allocation`): the training curves and
  their envelope, and ``N_opt(C)``, ``D_opt(C)`` with their bands;
- bootstrap distributions (:func:`plot_bootstrap_exponents`) with the point estimate;
- study reproductions (:func:`plot_observed_vs_predicted`, in :mod:`.studies`): observed
  against predicted.

The published models against every law's allocation are in :mod:`.frontier`; the palette,
footnotes and saving every figure shares in :mod:`._style`; the label placement in
:mod:`.labels`.
"""

from .._budgets import budget_groups
from ._style import CAVEAT_MARK, LAW_COLOURS, law_styles
from .allocation import allocation_band, isoflop_profiles, plot_envelope_fit, plot_isoflop_fit
from .fits import MAX_SLICES, fit_slices, plot_bootstrap_exponents, plot_parametric_fit
from .frontier import ISO_FLOPS, plot_tokens_vs_params, tokens_vs_params_figure
from .labels import place_labels
from .studies import plot_observed_vs_predicted

__all__ = [
    "CAVEAT_MARK",
    "ISO_FLOPS",
    "LAW_COLOURS",
    "MAX_SLICES",
    "allocation_band",
    "budget_groups",
    "fit_slices",
    "isoflop_profiles",
    "law_styles",
    "place_labels",
    "plot_bootstrap_exponents",
    "plot_envelope_fit",
    "plot_isoflop_fit",
    "plot_observed_vs_predicted",
    "plot_parametric_fit",
    "plot_tokens_vs_params",
    "tokens_vs_params_figure",
]
