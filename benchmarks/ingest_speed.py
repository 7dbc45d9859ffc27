"""Ingest speed: ``scalefit.load.logs`` against DuckDB's own ``read_csv`` on the same file.

Writes a long CSV (``run_id, step, tokens, loss, params``; default 5 million rows, 50 runs)
to a temporary folder, then times, each in a fresh process and a fresh DuckDB file, and
alternating so that a busy machine slows all of them alike:

- ``bare``: ``CREATE TABLE t AS SELECT * FROM read_csv(file)``: DuckDB's load, no checks;
- ``table``: ``INSERT INTO observations ... SELECT ... FROM read_csv(file)`` into the store's
  own ``observations`` table (seven columns, no PRIMARY KEY: scalefit keeps its key);
- ``keyed``: the same into ``observations`` as it was made before, with the PRIMARY KEY
  ``(run_id, metric, step)``: what that key's index costs;
- ``ingest``: :func:`scalefit.load.logs.ingest_paths` (streamed reading, validation with the
  schemas, duplicate handling, runs, bookkeeping, one transaction).

Prints the median seconds and the peak memory (RSS) of each, and the ratios ingest/bare
(the goal: under 2x) and ingest/table. Run::

    /work/venv/bin/python benchmarks/ingest_speed.py --rows 5000000 --repeat 3

``--kinds ingest --repeat 1`` measures the ingest alone (e.g. its memory at 10M rows).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import polars as pl
from _memory import peak_rss_mb


def write_csv(path: Path, rows: int, runs: int = 50) -> None:
    per = rows // runs
    step = np.tile(np.arange(1, per + 1), runs)
    loss = 1.8 + 6.0 / np.sqrt(step) + np.random.default_rng(0).normal(0, 0.01, step.size)
    pl.DataFrame(
        {
            "run_id": np.repeat([f"run{i:03d}" for i in range(runs)], per),
            "step": step,
            "tokens": step * 4096.0,
            "loss": loss,
            "params": np.repeat(np.geomspace(1e7, 1e9, runs), per),
        }
    ).write_csv(path)


def child(kind: str, csv: str, db: str) -> dict:
    import duckdb

    from scalefit import store
    from scalefit.load.logs import ingest_paths

    if kind == "keyed":  # the table as made before, outside the timing
        from scalefit.schemas import TABLES

        con = duckdb.connect(db)
        for stmt in store.ddl(dataclasses.replace(TABLES["observations"], enforce_key_in_db=True)):
            con.execute(stmt)
        con.close()
    started = time.perf_counter()
    if kind == "bare":
        con = duckdb.connect(db)
        con.execute(f"CREATE TABLE t AS SELECT * FROM read_csv('{csv}')").fetchall()
        con.close()
        rows = None
    elif kind in ("table", "keyed"):
        with store.connect(db) as con:
            store.run(con, "SET enable_progress_bar = false")
            with store.transaction(con):
                store.run(
                    con,
                    "INSERT INTO observations (run_id, step, tokens, metric, value) "
                    f"SELECT run_id, step, tokens, 'loss', loss FROM read_csv('{csv}')",
                )
        rows = None
    else:
        (info,) = ingest_paths(db, [csv])
        assert info.status == "ok", info
        rows = info.rows_ok
    seconds = time.perf_counter() - started
    return {"kind": kind, "seconds": seconds, "peak_mb": peak_rss_mb(), "rows": rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=5_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument(
        "--kinds",
        default="bare,table,keyed,ingest",
        help="comma-separated loads to time (default: all four)",
    )
    parser.add_argument("--child", nargs=3, metavar=("KIND", "CSV", "DB"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(*args.child)))
        return

    with tempfile.TemporaryDirectory(prefix="scalefit-bench-") as tmp:
        csv = Path(tmp) / "observations.csv"
        write_csv(csv, args.rows)
        size_mb = csv.stat().st_size / 1e6
        print(f"{args.rows:,} rows, {size_mb:.0f} MB CSV; {args.repeat} repeats, medians")
        kinds = [k for k in args.kinds.split(",") if k]
        unknown = set(kinds) - {"bare", "table", "keyed", "ingest"}
        if unknown:
            parser.error(f"unknown kind(s): {', '.join(sorted(unknown))}")
        results: dict[str, list[dict]] = {k: [] for k in kinds}
        for i in range(args.repeat):
            for kind in results:
                db = Path(tmp) / f"{kind}{i}.duckdb"
                out = subprocess.run(
                    [sys.executable, __file__, "--child", kind, str(csv), str(db)],
                    capture_output=True,
                    text=True,
                    check=True,
                )
                results[kind].append(json.loads(out.stdout.strip().splitlines()[-1]))
                db.unlink()
        median = {k: statistics.median(r["seconds"] for r in v) for k, v in results.items()}
        for kind, runs in results.items():
            peak = max(r["peak_mb"] for r in runs)
            rate = args.rows / median[kind] / 1e6
            each = ", ".join(f"{r['seconds']:.2f}" for r in runs)
            print(
                f"{kind:>7}: {median[kind]:6.2f} s  ({rate:.2f} M rows/s, peak RSS {peak:.0f} MB)"
                f"  [{each}]"
            )
        for base in ("bare", "table", "keyed"):
            if "ingest" in median and base in median:
                print(f"ingest / {base:<6}: {median['ingest'] / median[base]:.2f}x")


if __name__ == "__main__":
    main()
