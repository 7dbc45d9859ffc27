"""One loading path into the store: curated data, upstream files, published studies, user logs.

Every loader reads, validates (rejected rows go to ``quarantine`` with their reason), asks
:func:`~scalefit.load.info.decide` whether its input is new, appended, replaced or
unchanged, and writes its rows and its ``ingests`` row (a :class:`~scalefit.load.info.LoadInfo`)
in one transaction, so that re-running it is idempotent.

Modules: :mod:`.info` (``LoadInfo``, ``decide``, ingest ids), :mod:`.readers` and
:mod:`.validate` (reading and checking frames), :mod:`.curated`, :mod:`.upstream` (with
:mod:`.upstream_sources`, :mod:`.upstream_fetch`, :mod:`.upstream_prepare`), :mod:`.studies`
(with :mod:`.study_parsers`) and :mod:`.logs` (with its ``_log*`` helpers). Loaders import
nothing of fitting.

The public names below are re-exported lazily: ``import scalefit.load`` costs nothing until a
name is used (every CLI command imports the package that defines its options).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_EXPORTS: dict[str, str] = {
    # info
    "LoadInfo": "info",
    "Previous": "info",
    "Scan": "info",
    "decide": "info",
    "ingest_id": "info",
    # validate
    "validate_frame": "validate",
    "empty_frame": "validate",
    # curated
    "CuratedData": "curated",
    "CuratedLoadInfo": "curated",
    "datasets_dir": "curated",
    "load_curated": "curated",
    "read_curated": "curated",
    "read_sources": "curated",
    # upstream
    "FetchInfo": "upstream",
    "Upstream": "upstream",
    "UpstreamInfo": "upstream",
    "UpstreamLoadInfo": "upstream",
    "default_cache_dir": "upstream",
    "fetch_upstream": "upstream",
    "load_upstream": "upstream",
    "load_upstreams": "upstream",
    "model_changes": "upstream",
    "normalize_name": "upstream",
    "offline_default": "upstream",
    "read_upstream_file": "upstream",
    "refresh_upstreams": "upstream",
    # studies
    "Study": "studies",
    "StudyLoadInfo": "studies",
    "StudyStatus": "studies",
    "fetch_study": "studies",
    "get_study": "studies",
    "load_all": "studies",
    "load_studies": "studies",
    "load_study": "studies",
    "studies_table": "studies",
    # user logs
    "IngestProgress": "logs",
    "IngestReport": "logs",
    "discover": "logs",
    "ingest_file": "logs",
    "ingest_paths": "logs",
    "params_from_config": "logs",
}

__all__ = [
    "CuratedData",
    "CuratedLoadInfo",
    "FetchInfo",
    "IngestProgress",
    "IngestReport",
    "LoadInfo",
    "Previous",
    "Scan",
    "Study",
    "StudyLoadInfo",
    "StudyStatus",
    "Upstream",
    "UpstreamInfo",
    "UpstreamLoadInfo",
    "datasets_dir",
    "decide",
    "default_cache_dir",
    "discover",
    "empty_frame",
    "fetch_study",
    "fetch_upstream",
    "get_study",
    "ingest_file",
    "ingest_id",
    "ingest_paths",
    "load_all",
    "load_curated",
    "load_studies",
    "load_study",
    "load_upstream",
    "load_upstreams",
    "model_changes",
    "normalize_name",
    "offline_default",
    "params_from_config",
    "read_curated",
    "read_sources",
    "read_upstream_file",
    "refresh_upstreams",
    "studies_table",
    "validate_frame",
]

if TYPE_CHECKING:  # what the lazy names are, for type checkers and IDEs
    from .curated import (
        CuratedData,
        CuratedLoadInfo,
        datasets_dir,
        load_curated,
        read_curated,
        read_sources,
    )
    from .info import LoadInfo, Previous, Scan, decide, ingest_id
    from .logs import (
        IngestProgress,
        IngestReport,
        discover,
        ingest_file,
        ingest_paths,
        params_from_config,
    )
    from .studies import (
        Study,
        StudyLoadInfo,
        StudyStatus,
        fetch_study,
        get_study,
        load_all,
        load_studies,
        load_study,
        studies_table,
    )
    from .upstream import (
        FetchInfo,
        Upstream,
        UpstreamInfo,
        UpstreamLoadInfo,
        default_cache_dir,
        fetch_upstream,
        load_upstream,
        load_upstreams,
        model_changes,
        normalize_name,
        offline_default,
        read_upstream_file,
        refresh_upstreams,
    )
    from .validate import empty_frame, validate_frame


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value
