"""A study's files, verified: from the mirror, else the download cache, else downloaded from
the pinned URL; any bytes other than the declared sha256 are refused (see
:mod:`scalefit.load.studies`)."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import HashMismatchError, UpstreamUnavailableError
from .upstream_fetch import _describe_error, _download, _sha256_file

if TYPE_CHECKING:
    from .studies import Study

MIRROR_ENV = "SCALEFIT_UPSTREAM_MIRROR"
"""Environment variable naming the local mirror folder (overrides ``[upstream] mirror``)."""


def _refuse(study: Study, path: str, where: str, actual: str) -> HashMismatchError:
    expected = study.sha256_of(path)
    return HashMismatchError(
        f"{study.name}: {where} has sha256 {actual}, but the study pins {expected} for "
        f"{path} (commit {study.commit[:12]}): refused. Replace it with the file at "
        f"{study.url(path)}",
        upstream=study.name,
        expected=expected,
        actual=actual,
    )


@dataclass(frozen=True, slots=True)
class StudyFiles:
    """Verified local copies of a study's files."""

    study: str
    paths: Mapping[str, Path]
    """Path in the upstream repository -> verified local file."""
    origins: Mapping[str, int]
    """How many came from the ``mirror``, the ``cache`` and a ``download``."""


def fetch_study(
    study: Study,
    *,
    mirror: str | os.PathLike[str] | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    offline: bool | None = None,
    timeout: float = 30.0,
    progress: Callable[[str], None] | None = None,
) -> StudyFiles:
    """A verified local copy of every file of ``study``: from the mirror, else the cache,
    else downloaded (then cached, content-addressed by sha256).

    Parameters
    ----------
    mirror
        Mirror folder (files at ``<mirror>/<study>/<path>``), as the settings give it
        (``[upstream] mirror`` / ``SCALEFIT_UPSTREAM_MIRROR``); None: no mirror.
    cache_dir
        Download cache root; default :func:`scalefit.load.upstream_fetch.default_cache_dir`.
    offline
        Never download; default ``SCALEFIT_OFFLINE``.
    progress
        Called with a line now and then (long downloads).

    Raises
    ------
    HashMismatchError
        A mirror file or a download has other bytes than declared (expected and actual sha256
        in the message); nothing is used.
    UpstreamUnavailableError
        A file is in neither the mirror nor the cache and cannot be downloaded (the message
        names the URL and the mirror path).
    """
    from .upstream_fetch import default_cache_dir, offline_default

    mirror_root = Path(mirror) if mirror is not None else None
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    folder = cache / "studies" / study.name
    offline = offline_default() if offline is None else offline
    paths: dict[str, Path] = {}
    origins = {"mirror": 0, "cache": 0, "download": 0}
    for i, (path, sha) in enumerate(study.files, 1):
        found = _local_copy(study, path, sha, mirror_root, folder)
        if found is None:
            copy = _download_copy(study, path, sha, mirror_root, folder, offline, timeout)
            found = (copy, "download")
        paths[path] = found[0]
        origins[found[1]] += 1
        if found[1] == "download" and progress and (i % 25 == 0 or i == len(study.files)):
            progress(f"{study.name}: {i}/{len(study.files)} files")
    return StudyFiles(study.name, paths, origins)


def _local_copy(
    study: Study, path: str, sha: str, mirror_root: Path | None, folder: Path
) -> tuple[Path, str] | None:
    """The mirror's copy of ``path`` (refused if its bytes differ), else the cache's."""
    if mirror_root is not None:
        candidate = mirror_root / study.name / path
        if candidate.is_file():
            actual = _sha256_file(candidate)
            if actual != sha:
                raise _refuse(study, path, f"the mirror's copy {candidate}", actual)
            return candidate, "mirror"
    cached = folder / sha
    if cached.is_file() and _sha256_file(cached) == sha:
        return cached, "cache"
    return None


def _download_copy(
    study: Study,
    path: str,
    sha: str,
    mirror_root: Path | None,
    folder: Path,
    offline: bool,
    timeout: float,
) -> Path:
    """Download ``path`` into the cache, verified; or say why there is no copy."""
    where = (
        f"not in the mirror (no {mirror_root / study.name / path})"
        if mirror_root is not None
        else f"in no mirror (none is set: {MIRROR_ENV} or [upstream] mirror)"
    )
    if offline:
        raise UpstreamUnavailableError(
            f"{study.name}: {path} is {where}, not in the cache {folder}, and downloads "
            f"are off (offline): put the file there, or go online to download "
            f"{study.url(path)}"
        )
    url = study.url(path)
    try:
        tmp, actual, _ = _download(url, folder, timeout, agent="studies")
    except OSError as exc:  # URLError, HTTPError, timeouts are OSErrors
        raise UpstreamUnavailableError(
            f"{study.name}: {path} is {where}, not in the cache {folder}, and the download "
            f"of {url} failed ({_describe_error(exc)})"
        ) from exc
    if actual != sha:
        tmp.unlink(missing_ok=True)
        raise _refuse(study, path, f"the download of {url}", actual)
    cached = folder / sha
    os.replace(tmp, cached)
    return cached
