"""Names the command line shows before any heavy module is imported.

``scalefit --help`` and ``scalefit fit --help`` list the law names; importing
:mod:`scalefit.fit` (numpy, polars, scipy) for that took most of a second. The names live in
the vocabulary (:mod:`scalefit.schemas.vocabulary`, which imports nothing).
"""

from __future__ import annotations

from .schemas.vocabulary import LAW_NAMES

__all__ = ["LAW_NAMES"]
