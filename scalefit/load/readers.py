"""Readers of training logs: each turns one file into chunks of a normalised wide frame.

A chunk has one row per row of the file: ``__row_number`` (1-based data row, header
excluded), ``run_id``, ``step``, optional ``tokens``/``flops``/``tokens_seen`` (Hugging
Face's ``num_input_tokens_seen``), optional run-level columns
(``params``, ``project``, ``unique_tokens``, ``tokens_per_step``) and one column per metric,
named as stored in ``observations.metric``. Values are kept as read (text for CSV) so that
:func:`scalefit.load.validate.validate_frame` can say what is wrong with a cell. Reading is
streamed: no reader holds more than one chunk of a large file.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl

from ..errors import IngestError, UnknownFormatError
from ..schemas.vocabulary import LINE_LOG_FORMATS, LOG_FORMATS
from .validate import ROW

FORMATS = LOG_FORMATS
"""Formats :func:`detect_format` recognises (and ``--format`` accepts)."""

LINE_FORMATS = LINE_LOG_FORMATS
"""Formats written line by line: a grown file is read on from its last complete line."""

CHUNK_ROWS = 500_000
"""Rows per chunk: bounds memory on large files."""

RUN_COLUMNS = ("project", "params", "unique_tokens", "tokens_per_step", "schedule")
"""Run-level columns a long table may repeat on every row (constant per run)."""

_ALIASES: dict[str, tuple[str, ...]] = {
    # canonical name: accepted headers, most specific first (W&B's `_step` counts log calls,
    # not optimizer steps, so the trainer's own step wins when both are present: HF's
    # `train/global_step`, nanoGPT's `iter`).
    "run_id": ("run_id", "run", "name", "run_name"),
    "step": (
        "step",
        "train/global_step",
        "global_step",
        "trainer/global_step",
        "iter",
        "iter_num",
        "iteration",
        "_step",
    ),
    "tokens": ("tokens",),
    # HF Trainer's counter (W&B: `train/num_input_tokens_seen`): used where neither `tokens`
    # nor steps x tokens_per_step gives the tokens (scalefit.load.log_rows.TOKEN_SOURCES).
    "tokens_seen": ("num_input_tokens_seen", "train/num_input_tokens_seen"),
    "flops": ("flops",),
    "project": ("project",),
    "params": ("params",),
    "unique_tokens": ("unique_tokens",),
    "tokens_per_step": ("tokens_per_step",),
    "schedule": ("schedule",),
}
_SUMMARIES = frozenset({"train/train_loss"})
"""Headers that look like a loss but are no measurement at a step: the run-average training
loss HF's W&B callback logged (as ``train/train_loss``, at the last step) before it moved
it to the run summary (huggingface/transformers#29612, March 2024)."""
_WANDB_WIDE = re.compile(r"^(?P<run>.+) - (?P<metric>.+?)(?P<agg>__MIN|__MAX)?$")
_WANDB_MARKERS = ("_step", "_runtime", "_timestamp")


def metric_name(header: str) -> str:
    """The ``observations.metric`` name of a column header: ``train/loss`` -> ``train_loss``."""
    name = re.sub(r"[^0-9a-z]+", "_", header.strip().lower()).strip("_")
    return name


def is_metric(header: str) -> bool:
    """Whether a long table's column holds a loss: its name ends in ``loss`` (``loss``,
    ``train_loss``, ``eval/loss``, ``val_loss``), which excludes e.g. ``loss_scale``."""
    return metric_name(header).endswith("loss")


@dataclass(frozen=True, slots=True)
class Chunk:
    """Part of a file as a normalised wide frame (see the module docstring)."""

    frame: pl.DataFrame
    metrics: tuple[str, ...]
    rejected: pl.DataFrame | None = None
    """Rows that could not even be split into columns (``row_number``, ``raw``, ``reason``)."""


@dataclass
class Source:
    """A parsed file header: what the rows hold, and how to stream them."""

    format: str
    columns: list[str]
    metrics: list[str]
    ignored: list[str] = field(default_factory=list)
    meta: dict = field(default_factory=dict)
    """File-level run metadata (e.g. a trainer state's ``total_flos``)."""
    _chunks: object = None
    _runs: object = None

    def chunks(self) -> Iterator[Chunk]:
        """Stream the rows, one :class:`Chunk` at a time."""
        return self._chunks()  # type: ignore[operator]

    @property
    def has_run_columns(self) -> bool:
        """Whether the rows carry run-level columns that :meth:`run_columns` reads."""
        return self._runs is not None

    def run_columns(self) -> pl.DataFrame | None:
        """Distinct ``run_id`` + run-level columns (None if the file has no run-level
        column): read before the rows so that every row's run is known."""
        return self._runs() if self._runs is not None else None  # type: ignore[operator]


def detect_format(path: Path) -> str:
    """Detect the format of a log file from its name and first line.

    Raises
    ------
    UnknownFormatError
        The file is none of :data:`FORMATS`.
    """
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".ndjson"):
        return "jsonl"
    if suffix in (".parquet", ".pq"):
        return "parquet"
    if suffix == ".json":
        if path.name == "trainer_state.json":
            return "trainer_state"
        with path.open("rb") as fh:
            head = fh.read(1 << 16)
        if b'"log_history"' in head:
            return "trainer_state"
        raise UnknownFormatError(
            f"{path}: a JSON file without `log_history` is not a Trainer state; pass "
            "`--format trainer_state` if it is one, or convert it to JSONL (one row per line)"
        )
    if suffix == ".csv":
        return "wandb" if _wandb_kind(_csv_header(path)) else "csv"
    raise UnknownFormatError(
        f"{path}: unknown log format `{suffix or path.name}`; pass `--format` with one of "
        f"{', '.join(FORMATS)}, or rename the file (.csv, .jsonl, .parquet, trainer_state.json)"
    )


def _csv_header(path: Path) -> list[str]:
    try:
        return pl.read_csv(path, n_rows=0, infer_schema=False).columns
    except pl.exceptions.NoDataError:
        return []


def _wandb_kind(header: list[str]) -> str | None:
    if any(h.endswith(("__MIN", "__MAX")) and " - " in h for h in header):
        return "wide"
    if any(h in _WANDB_MARKERS for h in header):
        return "history"
    return None


def _mapping(headers: list[str]) -> tuple[dict[str, str], list[str], list[str]]:
    """Map headers to canonical names: (rename, metrics, ignored)."""
    lower = {h.strip().lower(): h for h in headers}
    rename: dict[str, str] = {}
    for canonical, aliases in _ALIASES.items():
        for alias in aliases:
            if alias in lower and lower[alias] not in rename:
                rename[lower[alias]] = canonical
                break
    metrics, ignored = [], []
    for h in headers:
        if h in rename:
            continue
        if is_metric(h) and metric_name(h) not in rename.values() and h not in _SUMMARIES:
            name = metric_name(h)
            if name in metrics:
                ignored.append(h)
                continue
            rename[h] = name
            metrics.append(name)
        else:
            ignored.append(h)
    return rename, metrics, ignored


def _check_columns(
    path: Path,
    fmt: str,
    headers: list[str],
    metrics: list[str],
    rename: dict[str, str] | None = None,
) -> None:
    """A long table needs a step column and a loss column (``rename``: its header mapping;
    None where the reader found the step column itself)."""
    if rename is not None and "step" not in rename.values():
        raise IngestError(
            f"{path}: no step column (the optimizer step of each row, named "
            f"{', '.join(f'`{a}`' for a in _ALIASES['step'])}); columns are: "
            f"{', '.join(headers) or '(none)'}. Add one, or pass `--format` if the format "
            "was misdetected"
        )
    if not metrics:
        raise IngestError(
            f"{path}: no loss column found (a column named like `loss`, `train_loss`, "
            f"`eval_loss`, `eval/loss`); columns are: {', '.join(headers) or '(none)'}. "
            "Rename the metric column, or pass `--format` if the format was misdetected"
        )


def _with_run_id(frame: pl.DataFrame, run_id: str | None) -> pl.DataFrame:
    if "run_id" not in frame.columns:
        frame = frame.with_columns(pl.lit(run_id, pl.String).alias("run_id"))
    return frame


def _lazy_chunks(
    lf: pl.LazyFrame, rename: dict[str, str], metrics: list[str], run_id: str | None
) -> Iterator[Chunk]:
    keep = [ROW, *rename]
    lf = lf.select(keep).rename(rename)
    for batch in lf.collect_batches(chunk_size=CHUNK_ROWS, maintain_order=True):
        frame = _with_run_id(batch.with_columns(pl.col(ROW).cast(pl.Int64)), run_id)
        yield Chunk(frame, tuple(metrics))


def _lazy_runs(lf: pl.LazyFrame, rename: dict[str, str], run_id: str | None):
    run_cols = [h for h, c in rename.items() if c in RUN_COLUMNS]
    if not run_cols:
        return None
    id_cols = [h for h, c in rename.items() if c == "run_id"]

    def runs() -> pl.DataFrame:
        frame = lf.select(*id_cols, *run_cols).rename(rename).unique().collect()
        return _with_run_id(frame, run_id)

    return runs


def read_csv(path: Path, *, run_id: str | None, row_offset: int = 0, fmt: str = "csv") -> Source:
    """A long CSV table or a W&B export (history or wide chart export)."""
    headers = _csv_header(path)
    kind = _wandb_kind(headers)
    if fmt == "wandb" and kind == "wide":
        return _read_wandb_wide(path, headers, row_offset)
    rename, metrics, ignored = _mapping(headers)
    if headers:
        _check_columns(path, fmt, headers, metrics, rename)

    def lazy() -> pl.LazyFrame:
        return pl.scan_csv(
            path, infer_schema=False, row_index_name=ROW, row_index_offset=row_offset + 1
        )

    def chunks() -> Iterator[Chunk]:
        if not headers:
            return iter(())
        return _lazy_chunks(lazy(), rename, metrics, run_id)

    runs = _lazy_runs(lazy(), rename, run_id) if headers else None
    return Source(fmt, headers, metrics, ignored, _chunks=chunks, _runs=runs)


def _read_wandb_wide(path: Path, headers: list[str], row_offset: int) -> Source:
    step_col = next((h for h in headers if h.strip().lower() in ("step", "_step")), None)
    if step_col is None:
        raise IngestError(
            f"{path}: a W&B chart export needs a `Step` column; columns are: {', '.join(headers)}"
        )
    series: dict[str, dict[str, str]] = {}
    ignored = []
    for h in headers:
        m = _WANDB_WIDE.match(h)
        if h == step_col:
            continue
        if m is None or m["agg"]:
            ignored.append(h)
            continue
        series.setdefault(m["run"].strip(), {})[h] = metric_name(m["metric"])
    metrics = sorted({name for cols in series.values() for name in cols.values()})
    _check_columns(path, "wandb", headers, metrics)

    def chunks() -> Iterator[Chunk]:
        lf = pl.scan_csv(
            path, infer_schema=False, row_index_name=ROW, row_index_offset=row_offset + 1
        )
        for batch in lf.collect_batches(chunk_size=CHUNK_ROWS, maintain_order=True):
            batch = batch.with_columns(pl.col(ROW).cast(pl.Int64))
            for run, cols in series.items():
                frame = batch.select(
                    pl.col(ROW),
                    pl.lit(run).alias("run_id"),
                    pl.col(step_col).alias("step"),
                    *(pl.col(h).alias(name) for h, name in cols.items()),
                )
                yield Chunk(frame, tuple(cols.values()))

    return Source("wandb", headers, metrics, ignored, _chunks=chunks)


def read_parquet(path: Path, *, run_id: str | None) -> Source:
    """A long table in Parquet."""
    headers = pl.read_parquet_schema(path)
    names = list(headers)
    rename, metrics, ignored = _mapping(names)
    _check_columns(path, "parquet", names, metrics, rename)

    def lazy() -> pl.LazyFrame:
        return pl.scan_parquet(path).with_row_index(ROW, offset=1)

    def chunks() -> Iterator[Chunk]:
        return _lazy_chunks(lazy(), rename, metrics, run_id)

    return Source(
        "parquet",
        names,
        metrics,
        ignored,
        _chunks=chunks,
        _runs=_lazy_runs(lazy(), rename, run_id),
    )


def _as_text(value: object) -> str | None:
    if value is None or isinstance(value, str):
        return value
    return json.dumps(value)


def _frame_from_records(records: list[dict], rows: list[int]) -> pl.DataFrame:
    """Records of mixed types as a frame of text (validation parses and explains)."""
    names: dict[str, None] = {}
    for rec in records:
        names.update(dict.fromkeys(rec))
    data = {n: [_as_text(rec.get(n)) for rec in records] for n in names}
    frame = pl.DataFrame(data, schema=dict.fromkeys(names, pl.String))
    return frame.insert_column(0, pl.Series(ROW, rows, dtype=pl.Int64))


def read_jsonl(path: Path, *, run_id: str | None, offset: int = 0, row_offset: int = 0) -> Source:
    """JSON Lines, one row object per line, from byte ``offset`` on.

    A line that is not a JSON object is rejected with the parser's reason; the other lines
    go on. A last line without its newline that does not parse is taken to be still being
    written and is left for the next ingest.
    """

    def chunks() -> Iterator[Chunk]:
        with path.open("rb") as fh:
            fh.seek(offset)
            line_no = row_offset
            batch: list[tuple[int, bytes]] = []
            for line in fh:
                line_no += 1
                if line.strip():
                    batch.append((line_no, line))
                if len(batch) >= CHUNK_ROWS:
                    yield _jsonl_chunk(path, batch, run_id)
                    batch = []
            if batch:
                last = batch[-1][1]
                if not last.endswith(b"\n"):
                    try:
                        json.loads(last)
                    except ValueError:
                        batch.pop()
            if batch:
                yield _jsonl_chunk(path, batch, run_id)

    def runs() -> pl.DataFrame | None:
        # Objects may differ line to line: the run-level columns are whatever the lines have.
        parts = []
        for chunk in chunks():
            present = [c for c in RUN_COLUMNS if c in chunk.frame.columns]
            if present:
                parts.append(chunk.frame.select("run_id", *present).unique())
        return pl.concat(parts, how="diagonal").unique() if parts else None

    # Run-level keys (`params`, `project`, ...) are read from the lines like a CSV's columns;
    # which lines have them is only known by reading, so the file always offers them.
    return Source("jsonl", [], [], _chunks=chunks, _runs=runs)


def _jsonl_chunk(path: Path, batch: list[tuple[int, bytes]], run_id: str | None) -> Chunk:
    records, rows, bad = [], [], []
    for no, line in batch:
        try:
            text = line.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise IngestError(
                f"{path}: line {no} is not UTF-8 text ({exc.reason} at byte {exc.start}); "
                "re-save the file as UTF-8"
            ) from None
        try:
            rec = json.loads(text)
        except ValueError as exc:
            bad.append((no, text.rstrip("\r\n"), f"line is not valid JSON: {exc}"))
            continue
        except RecursionError:
            bad.append((no, text.rstrip("\r\n"), "line is nested too deeply to read as JSON"))
            continue
        if not isinstance(rec, dict):
            bad.append((no, text.rstrip("\r\n"), "line is not a JSON object ({...})"))
            continue
        records.append(rec)
        rows.append(no)
    frame = _frame_from_records(records, rows)
    rename, metrics, _ignored = _mapping([c for c in frame.columns if c != ROW])
    frame = _with_run_id(frame.select(ROW, *rename).rename(rename), run_id)
    rejected = None
    if bad:
        rejected = pl.DataFrame(
            {
                "row_number": [b[0] for b in bad],
                "raw": [json.dumps({"line": b[1]}) for b in bad],
                "reason": [b[2] for b in bad],
            },
            schema={"row_number": pl.Int64, "raw": pl.String, "reason": pl.String},
        )
    return Chunk(frame, tuple(metrics), rejected)


_TRAINER_META = (
    "best_metric",
    "best_model_checkpoint",
    "epoch",
    "eval_steps",
    "global_step",
    "logging_steps",
    "max_steps",
    "num_train_epochs",
    "save_steps",
    "total_flos",
    "train_batch_size",
)


def _trainer_state(path: Path) -> dict:
    """The parsed ``trainer_state.json``, or one clear error saying why it cannot be."""
    try:
        state = json.loads(path.read_bytes().decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise IngestError(
            f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start}); re-save it as UTF-8"
        ) from None
    except ValueError as exc:
        raise IngestError(
            f"{path}: not valid JSON ({exc}); the file may be truncated (was it still being "
            "written?); the Trainer rewrites it whole at each checkpoint"
        ) from None
    except RecursionError:
        raise IngestError(f"{path}: JSON nested too deeply to read; not a Trainer state") from None
    if not isinstance(state, dict) or not isinstance(state.get("log_history"), list):
        raise IngestError(
            f"{path}: a Trainer state needs a `log_history` list; this JSON has none. "
            "Pass the right `--format`"
        )
    return state


def _trainer_record(entry: dict) -> dict[str, object]:
    """One ``log_history`` entry as a row: ``step``, ``tokens_seen`` (HF's
    ``num_input_tokens_seen``), ``train_loss`` (HF's ``loss``) and the metrics."""
    rec: dict[str, object] = {}
    for key, value in entry.items():
        if key == "step":
            rec["step"] = value
        elif key == "num_input_tokens_seen":
            rec["tokens_seen"] = value
        elif key == "loss":
            rec["train_loss"] = value
        elif is_metric(key):
            rec[metric_name(key)] = value
    return rec


def read_trainer_state(path: Path, *, run_id: str | None) -> Source:
    """A Hugging Face Trainer ``trainer_state.json``.

    Each ``log_history`` entry is a row (its 1-based position is the row number). HF logs the
    training loss as ``loss`` (stored as ``train_loss``, the name its W&B integration uses) and
    evaluation losses as ``eval_*loss``. The closing summary entry (the one with
    ``train_runtime``, whose ``train_loss`` is an average over the whole run) is not a
    measurement at a step and is skipped. ``total_flos`` becomes the run's ``flops``.
    """
    state = _trainer_state(path)
    records, rows = [], []
    for i, entry in enumerate(state["log_history"], start=1):
        if not isinstance(entry, dict) or "train_runtime" in entry:
            continue
        rec = _trainer_record(entry)
        if len(rec) > 1 or "step" not in rec:
            records.append(rec)
            rows.append(i)
    frame = _frame_from_records(records, rows)
    metrics = [c for c in frame.columns if c not in (ROW, "step", "tokens_seen")]
    if "step" not in frame.columns:
        frame = frame.with_columns(pl.lit(None, pl.String).alias("step"))
    frame = _with_run_id(frame, run_id)
    meta = {k: state[k] for k in _TRAINER_META if state.get(k) is not None}
    if isinstance(state.get("total_flos"), int | float) and state["total_flos"] > 0:
        meta["flops"] = float(state["total_flos"])

    def chunks() -> Iterator[Chunk]:
        if frame.height and metrics:
            yield Chunk(frame, tuple(metrics))

    return Source("trainer_state", list(state), metrics, meta=meta, _chunks=chunks)


def open_source(
    path: Path, fmt: str, *, run_id: str | None, offset: int = 0, row_offset: int = 0
) -> Source:
    """Open ``path`` (from byte ``offset`` for line formats; ``path`` is then a copy of the
    header plus the new bytes for CSV, see :mod:`scalefit.load.logs`)."""
    if fmt in ("csv", "wandb"):
        return read_csv(path, run_id=run_id, row_offset=row_offset, fmt=fmt)
    if fmt == "jsonl":
        return read_jsonl(path, run_id=run_id, offset=offset, row_offset=row_offset)
    if fmt == "parquet":
        return read_parquet(path, run_id=run_id)
    if fmt == "trainer_state":
        return read_trainer_state(path, run_id=run_id)
    raise UnknownFormatError(f"unknown format `{fmt}`; use one of {', '.join(FORMATS)}")
