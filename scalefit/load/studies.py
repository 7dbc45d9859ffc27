"""Published run datasets as studies: declared files, verified copies, parsed runs.

A *study* is a published dataset of training runs with losses (Gadre et al. 2024's 104-run
over-training testbed; Besiroglu et al. 2024's 245 points from Hoffmann et al. Figure 4). Adding
one is one declaration plus a parser:

- ``datasets/studies/<name>.toml``: ``[study]`` (``title``, ``source_id`` of a
  ``[sources.<id>]`` row of ``sources.toml``, ``parser``, ``repository``, ``commit``, ``url``
  template with ``{commit}`` and ``{path}``, ``licence``, ``notes``), ``[files]`` (path in the
  upstream repository -> sha256, every file the parser reads) and ``[[claims]]`` (the paper's
  printed figures the reproduction is checked against; see :mod:`scalefit.reproduce`).
- a parser registered in :data:`PARSERS`: verified local files -> ``runs`` and
  ``observations`` rows, and a reason for every run file it cannot read (quarantined; the
  other runs load).

Where the files come from, in order: the mirror (``[upstream] mirror`` in ``scalefit.toml`` or
``SCALEFIT_UPSTREAM_MIRROR``; a file is ``<mirror>/<study>/<path>``, the layout of
``shared/published-runs``), the download cache (``<cache>/studies/<study>/<sha256>``), then a
download of the pinned URL. Every copy, from wherever it comes, must have the declared sha256;
any other bytes are refused with both hashes named.

Metric names (``observations.metric``), so that one run carries every evaluation it has:

- ``eval_loss``: the study's default validation loss (Gadre: the C4 eval set, the paper's
  default), what ``scalefit fit`` and the refresh fit by default;
- ``eval_loss:<set>``: each validation set (Gadre: ``c4_val``, ``openlm``, ``paloma_c4_en``,
  ``paloma_redpajama``, ``paloma_falcon-refinedweb``, ``paloma_ptb``,
  ``paloma_dolma_100_programing_languages``, ``val_de-en_100``), with its 95% bounds as
  ``eval_loss_lower95:<set>`` and ``eval_loss_upper95:<set>``;
- ``accuracy:<task>``: each downstream task's accuracy (46 for Gadre); errors are
  ``1 - accuracy`` (computed where needed, not stored twice);
- ``loss``: a published loss point without a named evaluation (Besiroglu et al.).

All observations of a study are at ``step = 0`` (final values); run ids are
``<study>:<the study's own run name>``, projects ``<study>`` or ``<study>/<corpus>``.

A load is one transaction and idempotent by hash: its ingest id is derived from the study's
declared hashes and the parser's version, so loading the same files again writes nothing.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import tomllib
import urllib.parse
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl

from .. import store
from ..errors import UpstreamConfigError, UpstreamUnavailableError
from ..schemas import ObservationSchema, RunSchema
from .info import LoadInfo, Previous, Scan, decide, ingest_id, ingest_id_prefix, started
from .study_files import MIRROR_ENV, StudyFiles, fetch_study
from .study_parsers import GADRE_CORPORA, PARSERS, Parsed, Parser
from .validate import validate_frame

log = logging.getLogger(__name__)


_NAME = re.compile(r"^[a-z0-9][a-z0-9_.-]*$")


_SHA256 = re.compile(r"^[0-9a-f]{64}$")


_STUDY_KEYS = ("title", "source_id", "parser", "repository", "commit", "url", "licence", "notes")


@dataclass(frozen=True, slots=True)
class Study:
    """One ``datasets/studies/<name>.toml`` declaration (see the module docstring)."""

    name: str
    title: str
    source_id: str
    parser: str
    repository: str
    commit: str
    url_template: str
    files: tuple[tuple[str, str], ...]
    """``(path in the upstream repository, sha256)``, sorted by path."""
    claims: tuple[Mapping[str, Any], ...] = ()
    """The paper's printed figures (``[[claims]]`` tables, as written)."""
    extra: Mapping[str, Any] = field(default_factory=dict)
    """Other tables of the declaration (e.g. published estimates a claim compares against)."""
    licence: str | None = None
    notes: str | None = None
    path: Path | None = None

    def url(self, path: str) -> str:
        """The pinned download URL of the file at ``path``."""
        return self.url_template.format(commit=self.commit, path=path)

    def sha256_of(self, path: str) -> str:
        """The declared sha256 of ``path``."""
        return dict(self.files)[path]

    def declaration_sha256(self) -> str:
        """sha256 of everything that shapes the loaded rows: the files' hashes, the source,
        and the parser and its version. Same value, same rows: a load is skipped."""
        blob = {
            "files": list(self.files),
            "source_id": self.source_id,
            "parser": self.parser,
            "parser_version": PARSERS[self.parser].version if self.parser in PARSERS else None,
        }
        return hashlib.sha256(json.dumps(blob, sort_keys=True).encode()).hexdigest()

    @property
    def ingest_id(self) -> str:
        """The ``ingests`` key of a load of this declaration."""
        return ingest_id("study", self.declaration_sha256(), self.name)


def studies_dir() -> Path:
    """The shipped declarations: ``datasets/studies``."""
    from .curated import datasets_dir

    return datasets_dir() / "studies"


_Fail = Callable[[str], UpstreamConfigError]
"""Builds the error of a malformed declaration, naming its file."""


def _declaration(path: Path, known_sources: set[str]) -> Study:
    """The study declared in ``path``, checked in named steps (the file's name and TOML, its
    ``[study]`` table, its ``[files]``, its ``[[claims]]``); the first fault raises."""
    name = path.stem

    def fail(message: str) -> UpstreamConfigError:
        return UpstreamConfigError(f"{path}: {message}", path=str(path), upstream=name)

    doc = _read_declaration(path, fail)
    head = _study_table(doc, known_sources, fail)
    files = _files_table(doc, fail)
    claims = doc.get("claims", [])
    if not isinstance(claims, list) or not all(isinstance(c, dict) for c in claims):
        raise fail("`claims` must be [[claims]] tables")
    extra = {k: v for k, v in doc.items() if k not in ("study", "files", "claims")}
    return Study(
        name=name,
        title=head["title"],
        source_id=head["source_id"],
        parser=head["parser"],
        repository=head["repository"],
        commit=head["commit"],
        url_template=head["url"],
        files=tuple(sorted(files.items())),
        claims=tuple(claims),
        extra=extra,
        licence=head.get("licence"),
        notes=head.get("notes"),
        path=path,
    )


def _read_declaration(path: Path, fail: _Fail) -> dict[str, Any]:
    """The TOML document of ``path``, whose name must be a valid study name."""
    if not _NAME.match(path.stem):
        raise fail("a study's file name must be lowercase letters, digits, `_`, `-`, `.`")
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise fail(f"cannot read it: {exc}") from exc


def _study_table(doc: dict[str, Any], known_sources: set[str], fail: _Fail) -> dict[str, Any]:
    """The checked ``[study]`` table: known keys, the required texts, a known parser and
    source, a URL template with ``{path}`` on an allowed scheme."""
    head = doc.get("study")
    if not isinstance(head, dict):
        raise fail("needs a [study] table")
    unknown = sorted(set(head) - set(_STUDY_KEYS))
    if unknown:
        raise fail(f"[study] has unknown key(s) {unknown}; allowed: {', '.join(_STUDY_KEYS)}")
    for key in ("title", "source_id", "parser", "repository", "commit", "url"):
        if not isinstance(head.get(key), str) or not head[key].strip():
            raise fail(f"[study] needs `{key}` (text)")
    if head["parser"] not in PARSERS:
        raise fail(f"[study] parser {head['parser']!r} is not one of {', '.join(PARSERS)}")
    if head["source_id"] not in known_sources:
        raise fail(
            f"[study] source_id {head['source_id']!r} has no [sources.{head['source_id']}] "
            "in sources.toml: add the paper there"
        )
    if "{path}" not in head["url"]:
        raise fail("[study] `url` must contain `{path}` (and may contain `{commit}`)")
    scheme = urllib.parse.urlsplit(head["url"]).scheme
    if scheme not in ("http", "https", "file"):
        raise fail("[study] `url` must start with http://, https:// or file://")
    return head


def _files_table(doc: dict[str, Any], fail: _Fail) -> dict[str, str]:
    """The checked ``[files]`` table: relative paths in the repository, each with a sha256."""
    files = doc.get("files")
    if not isinstance(files, dict) or not files:
        raise fail("needs a [files] table: path in the upstream repository = sha256")
    for file, sha in files.items():
        if not isinstance(sha, str) or not _SHA256.match(sha):
            raise fail(f"[files] {file!r} = {sha!r} is not a sha256 (64 lowercase hex digits)")
        if file.startswith("/") or ".." in Path(file).parts:
            raise fail(f"[files] {file!r} must be a relative path inside the repository")
    return files


def load_studies(datasets_dir: str | os.PathLike[str] | None = None) -> dict[str, Study]:
    """Every study declared in ``<datasets_dir>/studies/*.toml`` (default: the shipped
    datasets), by name, in name order.

    Raises
    ------
    UpstreamConfigError
        A declaration is malformed (the message names the file and what to fix).
    """
    from .curated import datasets_dir as shipped

    base = Path(datasets_dir) if datasets_dir is not None else shipped()
    sources_toml = base / "sources.toml"
    try:
        sources = tomllib.loads(sources_toml.read_text(encoding="utf-8")).get("sources", {})
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise UpstreamConfigError(f"{sources_toml}: cannot read it: {exc}") from exc
    folder = base / "studies"
    paths = sorted(folder.glob("*.toml")) if folder.is_dir() else []
    return {p.stem: _declaration(p, set(sources)) for p in paths}


def get_study(name: str, datasets_dir: str | os.PathLike[str] | None = None) -> Study:
    """The study called ``name``.

    Raises
    ------
    UpstreamConfigError
        No such study (the message lists the declared ones).
    """
    studies = load_studies(datasets_dir)
    if name not in studies:
        raise UpstreamConfigError(
            f"unknown study {name!r}; declared: {', '.join(studies) or 'none'} "
            "(see `scalefit studies list`)"
        )
    return studies[name]


@dataclass(frozen=True, slots=True)
class StudyLoadInfo:
    """What :func:`load_study` did."""

    study: str
    status: str
    """``loaded`` (the store was written) or ``unchanged`` (this declaration is loaded)."""
    ingest_id: str
    runs: int
    observations: int
    rejected: int
    origins: Mapping[str, int]
    message: str


def _previous(con: Any, study: Study) -> Previous | None:
    """The load of this very declaration, if the store records one, and whether its runs are
    all still there."""
    rows = store.run(
        con,
        "SELECT sha256, settings_sha256, rows_ok FROM ingests "
        "WHERE ingest_id = ? AND status IN ('ok', 'rejected_rows')",
        [study.ingest_id],
    )
    if not rows:
        return None
    have = store.run(
        con,
        "SELECT count(*) FROM runs WHERE ingest_id = ? AND starts_with(run_id, ?)",
        [study.ingest_id, f"{study.name}:"],
    )[0][0]
    return Previous(rows[0][0], rows[0][1], intact=have == rows[0][2])


def _loaded(con: Any, study: Study) -> bool:
    sha = study.declaration_sha256()
    return decide(_previous(con, study), Scan(sha), sha).mode == "unchanged"


def load_study(
    con: Any,
    study: Study,
    *,
    mirror: str | os.PathLike[str] | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    offline: bool | None = None,
    timeout: float = 30.0,
) -> StudyLoadInfo:
    """Fetch (see :func:`fetch_study`), parse and load ``study`` into the store, in one
    transaction, replacing its previous rows; a declaration already loaded (same hashes,
    same parser version, its runs intact) writes nothing.

    Raises
    ------
    HashMismatchError, UpstreamUnavailableError
        From :func:`fetch_study`: nothing is written.
    """
    if _loaded(con, study):
        message = f"{study.name}: already loaded"
        return StudyLoadInfo(study.name, "unchanged", study.ingest_id, 0, 0, 0, {}, message)
    sha = study.declaration_sha256()
    info = started(
        "study",
        study.url_template.format(commit=study.commit, path=""),
        name=study.name,
        sha256=sha,
        format="study",
        settings_sha256=sha,
    )
    files = fetch_study(study, mirror=mirror, cache_dir=cache_dir, offline=offline, timeout=timeout)
    parsed = PARSERS[study.parser].fn(study, files.paths)
    runs, obs = _checked_rows(study, parsed, info.ingest_id)
    quarantine = pl.DataFrame(
        {
            "ingest_id": [info.ingest_id] * len(parsed.rejected),
            "path": [p for p, _, _ in parsed.rejected],
            "row_number": list(range(1, len(parsed.rejected) + 1)),
            "raw": [json.dumps({"text": t}) for _, t, _ in parsed.rejected],
            "reason": [r for _, _, r in parsed.rejected],
        },
        schema_overrides={"row_number": pl.Int64},
    )
    n_runs, n_obs, n_bad = runs.height, obs.height, quarantine.height
    message = (
        f"{study.name}: {n_runs} runs, {n_obs} observations loaded"
        + (f", {n_bad} run file(s) quarantined" if n_bad else "")
        + " ("
        + ", ".join(f"{v} from the {k}" for k, v in files.origins.items() if v)
        + ")"
    )
    size = sum(p.stat().st_size for p in files.paths.values())
    info = info.finished(n_runs, n_bad, message, size_bytes=size)
    _write_study(con, study, info, runs, obs, quarantine)
    for _, _, reason in parsed.rejected:
        log.warning("quarantined: %s", reason)
    log.info(message)
    return StudyLoadInfo(
        study.name, "loaded", info.ingest_id, n_runs, n_obs, n_bad, files.origins, message
    )


def _checked_rows(
    study: Study, parsed: Parsed, ingest_id: str
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """The parsed ``runs`` and ``observations``, validated; a row the schema rejects is a
    bug in the parser (not the data's fault), so it fails the load."""
    runs = pl.DataFrame(parsed.runs, infer_schema_length=None).with_columns(
        pl.lit(ingest_id).alias("ingest_id")
    )
    obs = pl.DataFrame(parsed.observations, infer_schema_length=None).with_columns(
        pl.lit(ingest_id).alias("ingest_id")
    )
    checked_runs = validate_frame(runs, RunSchema, fill_missing=True)
    checked_obs = validate_frame(obs, ObservationSchema, fill_missing=True)
    if checked_runs.rejected.height or checked_obs.rejected.height:
        bad = checked_runs.rejected.head(3).to_dicts() + checked_obs.rejected.head(3).to_dicts()
        raise UpstreamConfigError(
            f"{study.name}: the parser made rows the schema rejects ({bad}); "
            "this is a bug in the parser"
        )
    return checked_runs.valid, checked_obs.valid


def _write_study(
    con: Any,
    study: Study,
    info: LoadInfo,
    runs: pl.DataFrame,
    obs: pl.DataFrame,
    quarantine: pl.DataFrame,
) -> None:
    """Replace the study's rows, quarantine and ``ingests`` row: one transaction."""
    mine = f"starts_with(run_id, '{study.name}:')"
    with store.transaction(con):
        store.write(con, "observations", obs, replace_where=mine, validate=False)
        store.write(con, "runs", runs, replace_where=mine, validate=False)
        store.run(
            con,
            "DELETE FROM quarantine WHERE starts_with(ingest_id, ?)",
            [ingest_id_prefix("study", study.name)],
        )
        if quarantine.height:
            store.write(con, "quarantine", quarantine)
        store.run(
            con,
            "DELETE FROM ingests WHERE starts_with(ingest_id, ?) AND ingest_id <> ?",
            [ingest_id_prefix("study", study.name), info.ingest_id],
        )
        store.write(con, "ingests", info.to_frame())


@dataclass(frozen=True, slots=True)
class StudyStatus:
    """One study's outcome in :func:`load_all`."""

    study: str
    status: str
    """``ok`` (loaded or unchanged), ``warning`` (no copy to be had while offline by choice:
    no mirror or cache) or ``error`` (a download failed with no copy to fall back on, a file
    failed its sha256, or the load failed): as for upstream files, an error makes the
    refresh's exit status 1."""
    message: str
    load: StudyLoadInfo | None = None


def load_all(
    con: Any,
    datasets_dir: str | os.PathLike[str] | None = None,
    *,
    mirror: str | os.PathLike[str] | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    offline: bool | None = None,
) -> list[StudyStatus]:
    """Load every declared study (:func:`load_study`); one failure does not stop the others."""
    from ..errors import ScalefitError
    from .upstream_fetch import offline_default

    offline = offline_default() if offline is None else offline
    out = []
    for study in load_studies(datasets_dir).values():
        try:
            info = load_study(con, study, mirror=mirror, cache_dir=cache_dir, offline=offline)
        except UpstreamUnavailableError as exc:
            # Offline by choice, a missing copy is expected; online, it is a failed download.
            status = "warning" if offline else "error"
            log.log(logging.WARNING if offline else logging.ERROR, "%s", exc)
            out.append(StudyStatus(study.name, status, str(exc)))
            continue
        except (OSError, ScalefitError, pl.exceptions.PolarsError) as exc:
            log.error("%s", exc)
            out.append(StudyStatus(study.name, "error", str(exc)))
            continue
        out.append(StudyStatus(study.name, "ok", info.message, info))
    return out


def studies_table(
    con: Any | None = None, datasets_dir: str | os.PathLike[str] | None = None
) -> pl.DataFrame:
    """One row per declared study: name, title, files, source, repository@commit, and, with
    a store, the runs loaded and the load's ingest id (null when not loaded)."""
    rows = []
    for study in load_studies(datasets_dir).values():
        runs = None
        loaded = None
        if con is not None:
            runs = store.run(
                con, "SELECT count(*) FROM runs WHERE starts_with(run_id, ?)", [f"{study.name}:"]
            )[0][0]
            loaded = bool(_loaded(con, study))
        rows.append(
            {
                "study": study.name,
                "title": study.title,
                "files": len(study.files),
                "source_id": study.source_id,
                "repository": f"{study.repository}@{study.commit[:12]}",
                "runs_loaded": runs,
                "current": loaded,
            }
        )
    return pl.DataFrame(
        rows,
        schema={
            "study": pl.String,
            "title": pl.String,
            "files": pl.Int64,
            "source_id": pl.String,
            "repository": pl.String,
            "runs_loaded": pl.Int64,
            "current": pl.Boolean,
        },
    )


__all__ = [
    "GADRE_CORPORA",
    "MIRROR_ENV",
    "PARSERS",
    "Parsed",
    "Parser",
    "Study",
    "StudyFiles",
    "StudyLoadInfo",
    "StudyStatus",
    "fetch_study",
    "get_study",
    "load_all",
    "load_studies",
    "load_study",
    "studies_dir",
    "studies_table",
]
