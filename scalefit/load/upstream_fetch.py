"""Downloading upstream files into a content-addressed cache, verifying their pinned
sha256, and falling back on the last good copy when offline or when a download fails."""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import http.client
import json
import logging
import os
import sys
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import scalefit

from ..errors import (
    HashMismatchError,
    UpstreamUnavailableError,
)
from .info import now as _now
from .upstream_sources import _SHA256, Upstream

log = logging.getLogger(__name__)


FetchStatus = Literal["ok", "hash_mismatch", "cached", "offline", "unavailable", "failed"]
"""What :func:`fetch_upstream` did.

- ``ok``: downloaded and verified; the copy in use is what the server sent.
- ``hash_mismatch``: downloaded, but the bytes differ from the pinned sha256 (an error): they
  were set aside under ``rejected/`` and the last good copy, if any, stays in use.
- ``cached``: the download failed (network, HTTP error); the cached copy is used (a warning).
- ``offline``: no download was tried; the cached copy is used (a warning).
- ``unavailable``: offline (no download tried) and no usable cached copy (a warning: a
  fresh machine told to stay offline can still refresh everything else).
- ``failed``: the download failed and no usable copy is cached (an error: nothing of this
  source can be loaded, so ``scalefit refresh`` exits with status 1).
"""


_CHUNK = 1 << 16


def default_cache_dir() -> Path:
    """``$SCALEFIT_CACHE``, else the platform's cache folder + ``scalefit/upstream``.

    Linux and others: ``$XDG_CACHE_HOME`` or ``~/.cache``; macOS: ``~/Library/Caches``;
    Windows: ``%LOCALAPPDATA%``.
    """
    env = os.environ.get("SCALEFIT_CACHE", "").strip()
    if env:
        return Path(env).expanduser()
    if sys.platform == "win32" and os.environ.get("LOCALAPPDATA"):
        base = Path(os.environ["LOCALAPPDATA"])
    elif sys.platform == "darwin":
        base = Path.home() / "Library" / "Caches"
    else:
        base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "scalefit" / "upstream"


def offline_default() -> bool:
    """True when the environment says not to download (``SCALEFIT_OFFLINE=1``/``true``)."""
    return os.environ.get("SCALEFIT_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


@dataclass(frozen=True, slots=True)
class FetchInfo:
    """What :func:`fetch_upstream` did, and which copy to load.

    Attributes
    ----------
    upstream, url
        The entry fetched.
    status
        See :data:`FetchStatus`.
    path
        The copy to load: the new snapshot, or the last good one; None when there is none.
    sha256
        sha256 of ``path``.
    fetched_at
        When ``path``'s bytes were first downloaded (UTC).
    changed
        True when this fetch made a new snapshot current.
    previous_sha256
        The current snapshot before this fetch, if any.
    downloaded_sha256
        sha256 of what the server sent this time (None when nothing was downloaded).
    pinned_sha256
        The sha256 ``sources.toml`` pins, if any.
    rejected_path
        Where bytes that failed the pin were set aside for review.
    message
        What happened and, for a problem, what to do.
    checked_at
        When the fetch ran (UTC).
    """

    upstream: str
    url: str
    status: FetchStatus
    path: Path | None
    sha256: str | None
    fetched_at: dt.datetime | None
    changed: bool
    previous_sha256: str | None
    downloaded_sha256: str | None
    pinned_sha256: str | None
    rejected_path: Path | None
    message: str
    checked_at: dt.datetime

    @property
    def usable(self) -> bool:
        """True when there is a copy to load."""
        return self.path is not None

    @property
    def level(self) -> Literal["ok", "warning", "error"]:
        """``error`` for a hash mismatch or a failed download with nothing cached,
        ``warning`` when no fresh copy was had otherwise, else ``ok``."""
        if self.status in ("hash_mismatch", "failed"):
            return "error"
        return "ok" if self.status == "ok" else "warning"

    def raise_for_status(self) -> None:
        """Raise for a hash mismatch or when no copy is available; do nothing otherwise.

        Raises
        ------
        HashMismatchError, UpstreamUnavailableError
        """
        if self.status == "hash_mismatch":
            raise HashMismatchError(
                self.message,
                upstream=self.upstream,
                expected=self.pinned_sha256,
                actual=self.downloaded_sha256,
            )
        if self.status in ("unavailable", "failed"):
            raise UpstreamUnavailableError(self.message)


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _mtime(path: Path) -> dt.datetime:
    return dt.datetime.fromtimestamp(path.stat().st_mtime, dt.UTC).replace(tzinfo=None)


def _write_json_atomic(path: Path, obj: Mapping[str, Any]) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(obj, fh, indent=2, sort_keys=True)
            fh.write("\n")
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _install(tmp: Path, final: Path) -> None:
    """Move a verified download into place; an existing snapshot (same bytes) is kept as is,
    so its file time stays the time it was first downloaded."""
    final.parent.mkdir(parents=True, exist_ok=True)
    if final.exists():
        tmp.unlink()
    else:
        os.replace(tmp, final)


def _verified(path: Path, sha: str) -> bool:
    """The file exists and has the sha256 its name claims (a damaged cache is not used)."""
    if not path.is_file():
        return False
    if _sha256_file(path) != sha:
        log.warning("cached snapshot %s is damaged (sha256 differs); ignoring it", path)
        return False
    return True


def _current(folder: Path) -> tuple[str, Path] | None:
    """The snapshot ``current.json`` points at, if it is present and intact."""
    pointer = folder / "current.json"
    try:
        data = json.loads(pointer.read_text(encoding="utf-8"))
        sha, file = str(data["sha256"]), str(data["file"])
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        log.warning("ignoring unreadable %s: %s", pointer, exc)
        return None
    path = folder / Path(file).name
    return (sha, path) if _SHA256.match(sha) and _verified(path, sha) else None


def _good_copy(upstream: Upstream, folder: Path) -> tuple[str, Path] | None:
    """The copy that may be loaded: for a pinned upstream, only the pinned snapshot."""
    if upstream.sha256 is not None:
        path = folder / f"{upstream.sha256}.{upstream.extension}"
        return (upstream.sha256, path) if _verified(path, upstream.sha256) else None
    return _current(folder)


def _download(
    url: str, folder: Path, timeout: float, agent: str = "upstream refresh"
) -> tuple[Path, str, int]:
    """Stream ``url`` into a temp file in ``folder`` (made if missing); returns (temp path,
    sha256, size). ``agent`` says in the User-Agent what downloads (upstreams, studies)."""
    folder.mkdir(parents=True, exist_ok=True)
    request = urllib.request.Request(
        url, headers={"User-Agent": f"scalefit/{scalefit.__version__} (+{agent})"}
    )
    fd, name = tempfile.mkstemp(dir=folder, prefix=".download-", suffix=".part")
    tmp = Path(name)
    digest = hashlib.sha256()
    size = 0
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(request, timeout=timeout) as resp:
            while chunk := resp.read(_CHUNK):
                digest.update(chunk)
                out.write(chunk)
                size += len(chunk)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return tmp, digest.hexdigest(), size


def _describe_error(exc: BaseException) -> str:
    if isinstance(exc, urllib.error.HTTPError):
        return f"HTTP {exc.code} {exc.reason}"
    if isinstance(exc, urllib.error.URLError):
        return str(exc.reason)
    return f"{type(exc).__name__}: {exc}"


def fetch_upstream(
    upstream: Upstream,
    cache_dir: str | os.PathLike[str] | None = None,
    *,
    offline: bool | None = None,
    timeout: float = 30.0,
) -> FetchInfo:
    """Download ``upstream`` into the cache and verify it, or fall back to the cached copy.

    Never raises for a network fault or a hash mismatch: the caller gets the copy to load
    (possibly the last good one) and a status saying what went wrong; call
    :meth:`FetchInfo.raise_for_status` to turn problems into exceptions.

    Parameters
    ----------
    upstream
        The entry to fetch.
    cache_dir
        Cache root; default :func:`default_cache_dir`. Snapshots go to
        ``<cache_dir>/<name>/<sha256>.<ext>``.
    offline
        True: do not download, use the cache. Default None: ``SCALEFIT_OFFLINE`` decides
        (unset means online), so a test suite that sets it can never reach the network by
        accident.
    timeout
        Seconds for the connection and each read (default 30).

    Returns
    -------
    FetchInfo

    Raises
    ------
    OSError
        The cache folder cannot be written.
    """
    offline = offline_default() if offline is None else offline
    folder = Path(cache_dir if cache_dir is not None else default_cache_dir()) / upstream.name
    folder.mkdir(parents=True, exist_ok=True)
    checked_at = _now()
    fetch = _Fetch(upstream, folder, checked_at, _current(folder), _good_copy(upstream, folder))
    if offline:
        return fetch.fallback("offline", "offline (not downloading)")
    try:
        tmp, sha, size = _download(upstream.url, folder, timeout)
    except (OSError, http.client.HTTPException, ValueError) as exc:
        # URLError, HTTPError, timeouts and refused connections are all OSErrors.
        why = f"could not download {upstream.url} ({_describe_error(exc)})"
        return fetch.fallback("cached", why)
    if upstream.sha256 is not None and sha != upstream.sha256:
        return fetch.mismatch(tmp, sha)
    return fetch.installed(tmp, sha, size)


@dataclass(frozen=True, slots=True)
class _Fetch:
    """One fetch of one upstream: what the cache held before, and the outcomes it can have."""

    upstream: Upstream
    folder: Path
    checked_at: dt.datetime
    previous: tuple[str, Path] | None
    good: tuple[str, Path] | None

    def info(self, status: FetchStatus, message: str, **kw: Any) -> FetchInfo:
        copy = kw.pop("copy", self.good)
        values: dict[str, Any] = {
            "upstream": self.upstream.name,
            "url": self.upstream.url,
            "status": status,
            "path": copy[1] if copy else None,
            "sha256": copy[0] if copy else None,
            "fetched_at": _mtime(copy[1]) if copy else None,
            "changed": False,
            "previous_sha256": self.previous[0] if self.previous else None,
            "downloaded_sha256": None,
            "pinned_sha256": self.upstream.sha256,
            "rejected_path": None,
            "message": message,
            "checked_at": self.checked_at,
        }
        return FetchInfo(**(values | kw))

    def fallback(self, status: FetchStatus, why: str) -> FetchInfo:
        """No download: the cached copy, with a warning, or none (offline: a warning)."""
        upstream, good, folder = self.upstream, self.good, self.folder
        if good is not None:
            message = (
                f"{upstream.name}: {why}; using the cached snapshot {good[0][:12]} "
                f"(downloaded {_mtime(good[1]):%Y-%m-%d %H:%M} UTC)"
            )
            log.warning(message)
            return self.info(status, message)
        hint = (
            "run the refresh with network access (unset SCALEFIT_OFFLINE, or set "
            "`[upstream] offline = false` in scalefit.toml)"
            if status == "offline"
            else f"check the network and that {upstream.url} is reachable, then refresh again"
        )
        pinned = f" or put the file at {folder / f'{upstream.sha256}.{upstream.extension}'}"
        message = (
            f"{upstream.name}: {why}, and no cached copy in {folder}: "
            f"{hint}{pinned if upstream.pinned else ''}"
        )
        if status == "offline":
            log.warning(message)
            return self.info("unavailable", message)
        log.error(message)
        return self.info("failed", message)

    def mismatch(self, tmp: Path, sha: str) -> FetchInfo:
        """The download fails its pin: set it aside for review, keep the last good copy."""
        upstream, good = self.upstream, self.good
        rejected = self.folder / "rejected" / f"{sha}.{upstream.extension}"
        _install(tmp, rejected)
        kept = (
            f"kept the last good copy ({good[0][:12]})"
            if good
            else "no good copy is cached, so nothing is loaded"
        )
        message = (
            f"{upstream.name}: {upstream.url} has sha256 {sha}, but sources.toml pins "
            f"{upstream.sha256}: the file changed upstream (or the pin is wrong); {kept}. "
            f"Review the new file at {rejected}; to accept it, set "
            f'sha256 = "{sha}" in [upstreams.{upstream.name}].'
        )
        log.error(message)
        return self.info("hash_mismatch", message, downloaded_sha256=sha, rejected_path=rejected)

    def installed(self, tmp: Path, sha: str, size: int) -> FetchInfo:
        """A verified download becomes the current snapshot."""
        upstream = self.upstream
        final = self.folder / f"{sha}.{upstream.extension}"
        _install(tmp, final)
        _write_json_atomic(
            self.folder / "current.json",
            {
                "sha256": sha,
                "file": final.name,
                "url": upstream.url,
                "size_bytes": size,
                "fetched_at": _mtime(final).isoformat(),
            },
        )
        changed = self.previous is None or self.previous[0] != sha
        what = "new snapshot" if changed else "unchanged"
        message = f"{upstream.name}: downloaded {size} bytes, sha256 {sha[:12]} ({what})"
        log.info(message)
        return self.info("ok", message, copy=(sha, final), changed=changed, downloaded_sha256=sha)
