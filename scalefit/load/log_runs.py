"""The ``runs`` rows of a user log: each run's metadata resolved once, from the file's
run-level columns, its sidecar, the options and what ``runs`` holds, and validated with
:class:`~schemas.runs.RunSchema`."""

from __future__ import annotations

import json
from collections.abc import Sequence

import duckdb
import polars as pl

from .. import store
from ..schemas import RunSchema
from .log_meta import DEFAULT_PROJECT, _count, _Metadata, params_from_config
from .readers import RUN_COLUMNS, Source
from .validate import validate_frame


class _Restart(Exception):
    """The single pass over a file found what only a careful pass handles: start the file's
    transaction again with ``careful=True`` (see :func:`_write`)."""


class _Runs:
    """Resolves each run's metadata once, validating it with :class:`RunSchema`.

    A run's values in the file's run-level columns (``params``…) must be known when the run
    is resolved. ``careful=True`` reads them for the whole file first (one more pass over
    it) and validates the runs of each chunk as they come. Otherwise (the single pass) the
    values arrive with each chunk (:meth:`observe`) and all runs are validated once, at the
    end (:meth:`rows`: each validation costs tens of milliseconds however few the rows); a
    run that shows a new value after it was resolved, or fails its validation, raises
    :class:`_Restart`, so that the result never depends on which pass made it.
    """

    def __init__(
        self,
        con: duckdb.DuckDBPyConnection,
        source: Source,
        meta: _Metadata,
        *,
        project: str | None,
        params: float | None,
        tokens_per_step: float | None,
        schedule: str | None = None,
        ingest_id: str,
        careful: bool = True,
    ) -> None:
        self.meta = meta
        self.file_meta = source.meta
        self.flags = {
            "project": project,
            "params": params,
            "tokens_per_step": tokens_per_step,
            "schedule": schedule,
        }
        self.ingest_id = ingest_id
        self.good: dict[str, dict] = {}
        self.bad: dict[str, str] = {}
        self.columns: dict[str, dict[str, list]] = {}
        self.careful = careful
        self.unchecked: dict[str, dict] = {}  # single pass: candidate rows, validated in rows()
        self.streamed = source.has_run_columns and not careful
        # What `runs` holds, read once: the chunks' statements then run in the writer thread
        # (:class:`_Writer`), and this transaction writes `runs` only after the last chunk.
        names = (
            "project",
            "params",
            "params_method",
            "tokens_per_step",
            "unique_tokens",
            "schedule",
        )
        self.existing: dict[str, dict] = {
            row[0]: dict(zip(names, row[1:], strict=True))
            for row in store.run(con, f"SELECT run_id, {', '.join(names)} FROM runs")
        }
        cols = source.run_columns() if careful else None
        if cols is not None and cols.height:
            present = [c for c in RUN_COLUMNS if c in cols.columns]
            grouped = (
                cols.filter(pl.col("run_id").is_not_null())
                .group_by("run_id")
                .agg(pl.col(c).drop_nulls().unique().sort() for c in present)
            )
            for row in grouped.iter_rows(named=True):
                self.columns[str(row["run_id"])] = {c: row[c] for c in present}

    def observe(self, frame: pl.DataFrame) -> None:
        """Take in a chunk's run-level values (when they are not prescanned).

        Raises
        ------
        _Restart
            A run already resolved shows a value it was resolved without.
        """
        present = [c for c in RUN_COLUMNS if c in frame.columns]
        if not self.streamed or not present or not frame.height:
            return
        # Each (run, values) combination first appears where a row differs from the one
        # before it: in a log, one row per run or so, so only those rows are grouped.
        cols = ["run_id", *present]
        changed = pl.any_horizontal(pl.col(c).ne_missing(pl.col(c).shift(1)) for c in cols)
        grouped = (
            frame.select(cols)
            .filter(changed.fill_null(True) & pl.col("run_id").is_not_null())
            .group_by("run_id")
            .agg(pl.col(c).drop_nulls().unique() for c in present)
        )
        for row in grouped.iter_rows(named=True):
            run_id = str(row["run_id"])
            have = self.columns.setdefault(run_id, {c: [] for c in present})
            updated = False
            for c in present:
                seen = have.get(c, [])
                if set(row[c]) - set(seen):
                    have[c] = sorted(set(seen) | set(row[c]))
                    updated = True
            if updated and (run_id in self.good or run_id in self.bad):
                raise _Restart(f"run `{run_id}`: run-level values change after its first rows")

    def resolve(self, run_ids: Sequence[str]) -> None:
        new = [r for r in run_ids if r not in self.good and r not in self.bad]
        if not new:
            return
        rows, reasons = [], {}
        for run_id in new:
            row, reason = self._candidate(run_id, self.existing.get(run_id, {}))
            if reason:
                reasons[run_id] = reason
            else:
                rows.append(row)
        if rows and not self.careful:
            for row in rows:
                tps = row["tokens_per_step"]
                try:  # needed now, to derive tokens; the rest is checked in rows()
                    tps = None if tps is None else float(tps)
                except ValueError:
                    raise _Restart(f"run `{row['run_id']}`: tokens_per_step {tps!r}") from None
                self.unchecked[row["run_id"]] = row
                self.good[row["run_id"]] = {**row, "tokens_per_step": tps}
        elif rows:
            frame = pl.DataFrame(rows, schema=dict.fromkeys(rows[0], pl.String))
            checked = validate_frame(frame, RunSchema, fill_missing=True)
            for row in checked.valid.iter_rows(named=True):
                self.good[row["run_id"]] = row
            for row in checked.rejected.iter_rows(named=True):
                run_id = json.loads(row["raw"])["run_id"]
                reasons[run_id] = f"run `{run_id}`: {row['reason']}"
        self.bad.update(reasons)

    def rows(self, run_ids: Sequence[str]) -> pl.DataFrame:
        """The ``runs`` rows to write, validated.

        Raises
        ------
        _Restart
            In the single pass, a run fails its validation: the careful pass rejects its
            rows, with the reason, from the first one.
        """
        if self.careful:
            return pl.DataFrame([self.good[r] for r in run_ids])
        rows = [self.unchecked[r] for r in run_ids]
        checked = validate_frame(
            pl.DataFrame(rows, schema=dict.fromkeys(rows[0], pl.String)),
            RunSchema,
            fill_missing=True,
        )
        if not checked.ok:
            raise _Restart(f"{checked.rejected.height} run(s) fail their validation")
        return checked.valid

    def _candidate(self, run_id: str, existing: dict) -> tuple[dict, str | None]:
        side = dict(self.meta.sidecar)
        per_run = side.pop("runs", None)
        if isinstance(per_run, dict) and isinstance(per_run.get(run_id), dict):
            side.update(per_run[run_id])
        cols = self.columns.get(run_id, {})
        for name, values in cols.items():
            if len(values) > 1:
                shown = ", ".join(str(v) for v in values[:5])
                return {}, (
                    f"run `{run_id}`: `{name}` differs between its rows ({shown}); a run has "
                    f"one {name}: fix the file or split the run"
                )

        def pick(name: str) -> object:
            if cols.get(name):
                return _count(name, cols[name][0])
            for value in (side.get(name), self.flags.get(name), existing.get(name)):
                if value is not None:
                    return _count(name, value)
            return None

        config = given if isinstance(given := side.get("config"), dict) else {}
        params, method = pick("params"), "given"
        if cols.get("params") or side.get("params") is not None:
            pass
        elif derived := params_from_config({**self.meta.model_config, **config, **side}):
            params, method = derived, "config_12ld2"
        elif self.flags["params"] is None and existing.get("params") is not None:
            method = existing.get("params_method") or "given"
        if params is None:
            where = (
                f"`params` in {self.meta.files[0]}"
                if self.meta.files
                else ("`params` to run.json beside the file")
            )
            return {}, (
                f"run `{run_id}` has no parameter count: pass `--params N`, add {where}, "
                "add a `params` column, or give `n_layer` and `d_model` in run.json"
            )
        flops = side.get("flops", self.file_meta.get("flops"))
        row = {
            "run_id": run_id,
            "project": pick("project") or DEFAULT_PROJECT,
            "params": params,
            "params_method": method,
            "flops": flops,
            "unique_tokens": pick("unique_tokens"),
            "tokens_per_step": pick("tokens_per_step"),
            "schedule": pick("schedule"),
            "config": self._config(side),
            "ingest_id": self.ingest_id,
        }
        return {k: None if v is None else str(v) for k, v in row.items()}, None

    def _config(self, side: dict) -> str:
        """``runs.config``: the file's and the sidecar's settings that have no column of
        their own, and the Trainer's model config."""
        settings = {
            k: v
            for k, v in {**self.file_meta, **side}.items()
            if k != "runs" and k not in RUN_COLUMNS
        }
        if self.meta.model_config:
            settings["model_config"] = self.meta.model_config
        return json.dumps(settings, default=str, sort_keys=True)
