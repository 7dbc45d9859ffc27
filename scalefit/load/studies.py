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

import csv
import datetime as dt
import hashlib
import io
import json
import logging
import math
import os
import re
import tempfile
import tomllib
import urllib.parse
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl

from .. import store
from ..errors import HashMismatchError, UpstreamConfigError, UpstreamUnavailableError
from ..schemas import ObservationSchema, RunSchema
from .validate import validate_frame

log = logging.getLogger(__name__)

MIRROR_ENV = "SCALEFIT_UPSTREAM_MIRROR"
"""Environment variable naming the local mirror folder (overrides ``[upstream] mirror``)."""

_NAME = re.compile(r"^[a-z0-9][a-z0-9_.-]*$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_STUDY_KEYS = ("title", "source_id", "parser", "repository", "commit", "url", "licence", "notes")


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(tzinfo=None)


# --------------------------------------------------------------------------------------------
# Declarations


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
        return f"study-{self.name}-{self.declaration_sha256()[:16]}"


def studies_dir() -> Path:
    """The shipped declarations: ``datasets/studies``."""
    from .curated import datasets_dir

    return datasets_dir() / "studies"


def _declaration(path: Path, known_sources: set[str]) -> Study:
    name = path.stem

    def fail(message: str) -> UpstreamConfigError:
        return UpstreamConfigError(f"{path}: {message}", path=str(path), upstream=name)

    if not _NAME.match(name):
        raise fail("a study's file name must be lowercase letters, digits, `_`, `-`, `.`")
    try:
        doc = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise fail(f"cannot read it: {exc}") from exc
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
    files = doc.get("files")
    if not isinstance(files, dict) or not files:
        raise fail("needs a [files] table: path in the upstream repository = sha256")
    for file, sha in files.items():
        if not isinstance(sha, str) or not _SHA256.match(sha):
            raise fail(f"[files] {file!r} = {sha!r} is not a sha256 (64 lowercase hex digits)")
        if file.startswith("/") or ".." in Path(file).parts:
            raise fail(f"[files] {file!r} must be a relative path inside the repository")
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


# --------------------------------------------------------------------------------------------
# Files: mirror, cache, download


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(1 << 16):
            digest.update(chunk)
    return digest.hexdigest()


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


def _download(url: str, folder: Path, timeout: float) -> tuple[Path, str]:
    import urllib.request

    import scalefit

    folder.mkdir(parents=True, exist_ok=True)
    request = urllib.request.Request(
        url, headers={"User-Agent": f"scalefit/{scalefit.__version__} (+studies)"}
    )
    fd, name = tempfile.mkstemp(dir=folder, prefix=".download-", suffix=".part")
    tmp = Path(name)
    digest = hashlib.sha256()
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(request, timeout=timeout) as resp:
            while chunk := resp.read(1 << 16):
                digest.update(chunk)
                out.write(chunk)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return tmp, digest.hexdigest()


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
        Download cache root; default :func:`scalefit.upstream.default_cache_dir`.
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
    from .upstream import default_cache_dir, offline_default

    mirror_root = Path(mirror) if mirror is not None else None
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    folder = cache / "studies" / study.name
    offline = offline_default() if offline is None else offline
    paths: dict[str, Path] = {}
    origins = {"mirror": 0, "cache": 0, "download": 0}
    for i, (path, sha) in enumerate(study.files, 1):
        if mirror_root is not None:
            candidate = mirror_root / study.name / path
            if candidate.is_file():
                actual = _sha256_file(candidate)
                if actual != sha:
                    raise _refuse(study, path, f"the mirror's copy {candidate}", actual)
                paths[path] = candidate
                origins["mirror"] += 1
                continue
        cached = folder / sha
        if cached.is_file() and _sha256_file(cached) == sha:
            paths[path] = cached
            origins["cache"] += 1
            continue
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
            tmp, actual = _download(url, folder, timeout)
        except OSError as exc:  # URLError, HTTPError, timeouts are OSErrors
            from .upstream import _describe_error

            raise UpstreamUnavailableError(
                f"{study.name}: {path} is {where}, not in the cache {folder}, and the download "
                f"of {url} failed ({_describe_error(exc)})"
            ) from exc
        if actual != sha:
            tmp.unlink(missing_ok=True)
            raise _refuse(study, path, f"the download of {url}", actual)
        os.replace(tmp, cached)
        paths[path] = cached
        origins["download"] += 1
        if progress and (i % 25 == 0 or i == len(study.files)):
            progress(f"{study.name}: {i}/{len(study.files)} files")
    return StudyFiles(study.name, paths, origins)


# --------------------------------------------------------------------------------------------
# Parsers


@dataclass(frozen=True, slots=True)
class Parsed:
    """What a parser made of a study's files."""

    runs: list[dict[str, Any]]
    observations: list[dict[str, Any]]
    rejected: list[tuple[str, str, str]]
    """``(path, raw text (truncated), reason)`` of each run file or row that could not be
    read; those runs are quarantined and the others load."""


@dataclass(frozen=True, slots=True)
class Parser:
    """A registered parser: ``fn(study, files) -> Parsed``; bump ``version`` when its output
    changes so stored studies are loaded again."""

    fn: Callable[[Study, Mapping[str, Path]], Parsed]
    version: int


GADRE_CORPORA = {"c4_original": "C4", "rpj": "RedPajama", "rw_original": "RefinedWeb"}
"""The testbed's training corpora (file-name prefix -> name in the paper)."""

GADRE_DEFAULT_SET = "c4_val"
"""The paper's default validation set: C4 eval."""


def _gadre_set(val_data: list[str]) -> str:
    """A validation set's name as the paper's code names it (``scaling/shared.py``)."""
    first = val_data[0]
    name = first.split("/")[-2]
    if "de-en" in name:
        name = first.split("/")[-1].split(".")[0]
    return name


def _positive(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{what} is {value!r}, not a number")
    value = float(value)
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"{what} is {value!r}, not a positive finite number")
    return value


def _gadre_run(
    study: Study, model: dict[str, Any], evals: dict[str, Any] | None, path: str
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    name = model["name"]
    if not isinstance(name, str) or not name:
        raise ValueError("`name` is missing")
    hp = model["hyperparameters"]
    params = _positive(hp["params"], "hyperparameters.params")
    tokens = _positive(hp["tokens"], "hyperparameters.tokens")
    corpus = model.get("dataset_name")
    if corpus not in GADRE_CORPORA:
        raise ValueError(f"dataset_name {corpus!r} is not one of {', '.join(GADRE_CORPORA)}")
    run_id = f"{study.name}:{name}"
    flops = 6.0 * params * tokens
    config = {
        "study": study.name,
        "run": name,
        "dataset": corpus,
        "model": str(hp.get("model", "")).split("/")[-1].split(".")[0],
        "chinchilla_multiplier": hp.get("chinchilla_multiplier"),
        "tokens_per_param": tokens / params,
        "params_no_embed": hp.get("params_no_embed"),
        "file": path,
        "sha256": study.sha256_of(path),
    }
    run = {
        "run_id": run_id,
        "project": f"{study.name}/{corpus}",
        "params": params,
        "params_method": "given",
        "tokens": tokens,
        "flops": flops,
        "config": json.dumps(config, sort_keys=True),
        "source_id": study.source_id,
    }
    obs: list[dict[str, Any]] = []

    def add(metric: str, value: Any) -> None:
        obs.append({"run_id": run_id, "metric": metric, "value": float(value)})

    sets: set[str] = set()
    for result in model["results"]:
        s = _gadre_set(result["val_data"])
        if s in sets:
            raise ValueError(f"validation set {s!r} appears twice")
        sets.add(s)
        add(f"eval_loss:{s}", _positive(result["loss"], f"loss of {s}"))
        add(f"eval_loss_lower95:{s}", result["loss_sequences_lower_95"])
        add(f"eval_loss_upper95:{s}", result["loss_sequences_upper_95"])
        if s == GADRE_DEFAULT_SET:
            add("eval_loss", result["loss"])
    if GADRE_DEFAULT_SET not in sets:
        raise ValueError(f"no {GADRE_DEFAULT_SET} result (the paper's default loss)")
    if evals is not None:
        for task, acc in evals["eval_metrics"]["icl"].items():
            add(f"accuracy:{task}", acc)
    for o in obs:
        o.update({"step": 0, "tokens": tokens, "flops": flops})
    return run, obs


def parse_gadre2024(study: Study, files: Mapping[str, Path]) -> Parsed:
    """Gadre et al. (2024): ``exp_data/models/<run>.json`` (one run: sizes, tokens, 8
    validation losses) and ``exp_data/evals/evaluation_<run>_heavy.json`` (46 downstream
    accuracies). A run file that cannot be read (bad JSON, a missing or non-positive field, an
    unknown corpus) is rejected with the reason; its evaluation file then is not used."""
    runs: list[dict[str, Any]] = []
    observations: list[dict[str, Any]] = []
    rejected: list[tuple[str, str, str]] = []
    for path in sorted(p for p in files if p.startswith("exp_data/models/")):
        raw = files[path].read_bytes()
        stem = Path(path).stem
        eval_path = f"exp_data/evals/evaluation_{stem}_heavy.json"
        try:
            try:
                model = json.loads(raw)
            except (UnicodeDecodeError, json.JSONDecodeError) as exc:
                raise ValueError(f"not valid JSON ({exc})") from None
            if not isinstance(model, dict):
                raise ValueError("not a JSON object")
            evals = None
            if eval_path in files:
                try:
                    evals = json.loads(files[eval_path].read_bytes())
                except (UnicodeDecodeError, json.JSONDecodeError) as exc:
                    raise ValueError(f"{eval_path} is not valid JSON ({exc})") from None
            if model.get("name") != stem:
                raise ValueError(f"`name` is {model.get('name')!r}, the file is {stem}")
            run, obs = _gadre_run(study, model, evals, path)
        except (KeyError, TypeError, ValueError, AttributeError, IndexError) as exc:
            reason = f"missing field {exc}" if isinstance(exc, KeyError) else str(exc)
            text = raw[:2000].decode("utf-8", errors="replace")
            rejected.append((path, text, f"{study.name}: {path}: {reason}"))
            continue
        runs.append(run)
        observations.extend(obs)
    return Parsed(runs, observations, rejected)


def parse_besiroglu2024(study: Study, files: Mapping[str, Path]) -> Parsed:
    """Besiroglu et al. (2024)'s ``data/svg_extracted_data.csv``: one run per row
    (``Model Size``, ``Training FLOP``, ``loss``); tokens = FLOP / (6 N) as the authors do.
    A row with a missing or non-positive value is rejected with the reason."""
    (path,) = files
    text = files[path].read_text(encoding="utf-8")
    runs: list[dict[str, Any]] = []
    observations: list[dict[str, Any]] = []
    rejected: list[tuple[str, str, str]] = []
    for i, row in enumerate(csv.DictReader(io.StringIO(text)), 1):
        try:
            params = _positive(_float(row.get("Model Size")), "Model Size")
            flops = _positive(_float(row.get("Training FLOP")), "Training FLOP")
            loss = _positive(_float(row.get("loss")), "loss")
        except ValueError as exc:
            rejected.append((f"{path}#row={i}", json.dumps(row), f"{study.name}: row {i}: {exc}"))
            continue
        run_id = f"{study.name}:{i}"
        tokens = flops / (6.0 * params)
        config = {
            "study": study.name,
            "run": str(i),
            "row_number": i,
            "derived": "tokens = flops / (6 params)",
            "file": path,
            "sha256": study.sha256_of(path),
        }
        runs.append(
            {
                "run_id": run_id,
                "project": study.name,
                "params": params,
                "params_method": "given",
                "tokens": tokens,
                "flops": flops,
                "config": json.dumps(config, sort_keys=True),
                "source_id": study.source_id,
            }
        )
        observations.append(
            {
                "run_id": run_id,
                "step": 0,
                "tokens": tokens,
                "flops": flops,
                "metric": "loss",
                "value": loss,
            }
        )
    return Parsed(runs, observations, rejected)


def _float(value: Any) -> Any:
    try:
        return float(value)
    except (TypeError, ValueError):
        return value


PARSERS: dict[str, Parser] = {
    "gadre2024": Parser(parse_gadre2024, 1),
    "besiroglu2024": Parser(parse_besiroglu2024, 1),
}
"""Registered parsers, by the name a declaration's ``parser`` gives."""


# --------------------------------------------------------------------------------------------
# Loading into the store


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


def _loaded(con: Any, study: Study) -> bool:
    rows = store.run(
        con,
        "SELECT rows_ok FROM ingests WHERE ingest_id = ? AND status IN ('ok', 'rejected_rows')",
        [study.ingest_id],
    )
    if not rows:
        return False
    have = store.run(
        con,
        "SELECT count(*) FROM runs WHERE ingest_id = ? AND starts_with(run_id, ?)",
        [study.ingest_id, f"{study.name}:"],
    )[0][0]
    return have == rows[0][0]


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
    ingest_id = study.ingest_id
    if _loaded(con, study):
        return StudyLoadInfo(
            study.name, "unchanged", ingest_id, 0, 0, 0, {}, f"{study.name}: already loaded"
        )
    started = _now()
    files = fetch_study(study, mirror=mirror, cache_dir=cache_dir, offline=offline, timeout=timeout)
    parsed = PARSERS[study.parser].fn(study, files.paths)
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
    quarantine = pl.DataFrame(
        {
            "ingest_id": [ingest_id] * len(parsed.rejected),
            "path": [p for p, _, _ in parsed.rejected],
            "row_number": list(range(1, len(parsed.rejected) + 1)),
            "raw": [json.dumps({"text": t}) for _, t, _ in parsed.rejected],
            "reason": [r for _, _, r in parsed.rejected],
        },
        schema_overrides={"row_number": pl.Int64},
    )
    n_runs, n_obs, n_bad = checked_runs.valid.height, checked_obs.valid.height, quarantine.height
    message = (
        f"{study.name}: {n_runs} runs, {n_obs} observations loaded"
        + (f", {n_bad} run file(s) quarantined" if n_bad else "")
        + " ("
        + ", ".join(f"{v} from the {k}" for k, v in files.origins.items() if v)
        + ")"
    )
    ingest = pl.DataFrame(
        {
            "ingest_id": [ingest_id],
            "path": [study.url_template.format(commit=study.commit, path="")],
            "sha256": [study.declaration_sha256()],
            "format": ["study"],
            "started_at": [started],
            "finished_at": [_now()],
            "rows_in": [n_runs + n_bad],
            "rows_ok": [n_runs],
            "rows_rejected": [n_bad],
            "status": ["rejected_rows" if n_bad else "ok"],
            "message": [message],
            "size_bytes": [sum(p.stat().st_size for p in files.paths.values())],
            "settings_sha256": [study.declaration_sha256()],
        }
    )
    mine = f"starts_with(run_id, '{study.name}:')"
    with store.transaction(con):
        store.write(con, "observations", checked_obs.valid, replace_where=mine, validate=False)
        store.write(con, "runs", checked_runs.valid, replace_where=mine, validate=False)
        store.run(
            con,
            "DELETE FROM quarantine WHERE starts_with(ingest_id, ?)",
            [f"study-{study.name}-"],
        )
        if n_bad:
            store.write(con, "quarantine", quarantine)
        store.run(
            con,
            "DELETE FROM ingests WHERE starts_with(ingest_id, ?) AND ingest_id <> ?",
            [f"study-{study.name}-", ingest_id],
        )
        store.write(con, "ingests", ingest)
    for _, _, reason in parsed.rejected:
        log.warning("quarantined: %s", reason)
    log.info(message)
    return StudyLoadInfo(
        study.name, "loaded", ingest_id, n_runs, n_obs, n_bad, files.origins, message
    )


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
    from .upstream import offline_default

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
