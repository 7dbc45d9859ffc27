"""Strict JSON: what scalefit prints or stores as JSON never holds NaN or infinity.

Imports nothing heavy, so the command line can use it before numpy is loaded.
"""

from __future__ import annotations

import math
from typing import Any


def finite(obj: Any) -> Any:
    """``obj`` with every float that is not finite (NaN, infinity) replaced by None, in nested
    dicts, lists and tuples: JSON has no such numbers (``json.dumps`` would write ``NaN``).

    >>> finite({"a": float("nan"), "b": [1.0, float("inf")]})
    {'a': None, 'b': [1.0, None]}
    """
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: finite(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [finite(v) for v in obj]
    return obj
