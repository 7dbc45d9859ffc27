"""Ingest under real process faults: killed mid-ingest, two writers, a busy database."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from ingest_files import rows

from scalefit import store
from scalefit.load.logs import ingest_paths

pytestmark = pytest.mark.slow

_CLI = "from scalefit.cli import main; main()"


def _big_csv(path: Path, n: int, run_prefix: str = "k") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    runs = 20
    step = np.tile(np.arange(1, n // runs + 1), runs)
    run_id = np.repeat([f"{run_prefix}{i}" for i in range(runs)], n // runs)
    pl.DataFrame(
        {
            "run_id": run_id,
            "step": step,
            "tokens": step * 4096.0,
            "loss": 2.0 + 5.0 / np.sqrt(step),
            "params": 1e7,
        }
    ).write_csv(path)
    return path


def test_killed_mid_ingest_leaves_nothing_of_the_file(tmp_path: Path, db_path: Path) -> None:
    log = _big_csv(tmp_path / "big.csv", 300_000)
    # Small chunks so that the kill lands between chunks, inside the file's transaction.
    script = textwrap.dedent(
        f"""
        import sys
        from scalefit.load import readers as _readers
        from scalefit.load.logs import ingest_paths
        _readers.CHUNK_ROWS = 20_000

        def progress(event):
            if event.info is None and event.rows_read:
                print("chunk", event.rows_read, flush=True)

        ingest_paths({str(db_path)!r}, [{str(log)!r}], progress=progress)
        print("done", flush=True)
        """
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        first = proc.stdout.readline()
        assert first.startswith("chunk"), first + proc.stderr.read()
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    with store.connect(db_path) as con:  # reopens fine (the WAL is replayed or discarded)
        counts = store.table_counts(con)
    assert counts["observations"] in (0, 300_000)
    assert counts["observations"] == 0, "the kill came after the commit: make the file bigger"
    assert counts["runs"] == counts["ingests"] == counts["quarantine"] == 0
    # The next ingest reads the whole file.
    (info,) = ingest_paths(db_path, [log])
    assert (info.status, info.mode, info.rows_ok) == ("ok", "new", 300_000)


def test_two_processes_ingest_into_one_database(tmp_path: Path, db_path: Path) -> None:
    logs = [_big_csv(tmp_path / f"log{i}.csv", 100_000, run_prefix=f"p{i}-") for i in range(2)]
    extra = [_big_csv(tmp_path / f"s{i}" / "s.csv", 2_000, run_prefix=f"s{i}-") for i in range(2)]
    env = {**os.environ, "SCALEFIT_BUSY_TIMEOUT": "60"}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _CLI, "ingest", str(log), str(small), "--db", str(db_path)],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=env,
        )
        for log, small in zip(logs, extra, strict=True)
    ]
    outputs = [p.communicate(timeout=120)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    assert rows(db_path, "SELECT count(*), count(DISTINCT run_id) FROM observations") == [
        (2 * 100_000 + 2 * 2_000, 80)
    ]
    assert rows(db_path, "SELECT count(*) FROM ingests WHERE status = 'ok'") == [(4,)]


def test_a_busy_database_waits_then_fails_clearly(tmp_path: Path, db_path: Path) -> None:
    log = tmp_path / "log.csv"
    log.write_text("run_id,step,loss,params\nr,1,4.0,1e6\n")
    with store.connect(db_path):
        pass
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            f"import duckdb, time; c = duckdb.connect({str(db_path)!r}); print('held', "
            "flush=True); time.sleep(4)",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        started = time.monotonic()
        result = subprocess.run(
            [sys.executable, "-c", _CLI, "ingest", str(log), "--db", str(db_path)],
            capture_output=True,
            text=True,
            env={**os.environ, "SCALEFIT_BUSY_TIMEOUT": "0.5"},
            timeout=60,
        )
        waited = time.monotonic() - started
    finally:
        holder.wait(timeout=30)
    assert result.returncode == 1
    assert "busy" in result.stderr and "SCALEFIT_BUSY_TIMEOUT" in result.stderr
    assert waited >= 0.5
    # Within the wait, the second writer gets in once the first is done.
    (info,) = ingest_paths(db_path, [log])
    assert info.status == "ok"
