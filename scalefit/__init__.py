"""scalefit: published LLM training runs, your own logs, and scaling laws in one DuckDB file.

The design card keeps ``schemas/``, ``flows/`` and ``datasets/`` as top-level folders of the
repository, while the wheel ships them inside this package (``scalefit.schemas`` …) so that an
installed scalefit never claims the generic top-level names ``schemas`` or ``flows``. In the
repository, ``scalefit/schemas``, ``scalefit/flows`` and ``scalefit/datasets`` are relative
symbolic links to those folders: the clone, the editable install and the wheel all resolve
``scalefit.schemas`` the same way, with nothing added to the package path at import time
(see CONTRIBUTING.md, "Packaging").
"""

from __future__ import annotations

__all__ = ["__version__"]


def __getattr__(name: str) -> str:
    # The version is read from the installed metadata on first use only: every command
    # imports this package, and importlib.metadata costs tens of milliseconds.
    if name == "__version__":
        from importlib.metadata import PackageNotFoundError, version

        try:
            value = version("scalefit")
        except PackageNotFoundError:  # running from a clone that was never installed
            value = "0.0.0+unknown"
        globals()["__version__"] = value
        return value
    raise AttributeError(f"module 'scalefit' has no attribute {name!r}")
