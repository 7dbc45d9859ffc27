"""The staging and upsert SQL the store generates from a schema (:func:`scalefit.bulk.staging`),
through which the log loader writes ``observations``: on a real DuckDB file."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest

from scalefit import bulk, store
from scalefit.errors import StoreError
from scalefit.load.log_rows import STAGE_COLUMNS
from scalefit.load.log_sink import STAGE
from scalefit.schemas import TABLES


def test_the_log_stage_is_observations_without_its_ingest_id_plus_the_file_row() -> None:
    columns = TABLES["observations"].columns
    assert STAGE.columns == tuple(c for c in columns if c != "ingest_id")
    assert (*STAGE.columns, *STAGE.extra) == STAGE_COLUMNS
    types = store.column_types(TABLES["observations"])
    for column in STAGE.columns:
        assert f'"{column}" {types[column]}' in STAGE.create


def _chunk(rows: list[tuple[str, int, float]]) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "run_id": [r[0] for r in rows],
            "step": [r[1] for r in rows],
            "tokens": [float(r[1]) * 10 for r in rows],
            "flops": [None] * len(rows),
            "metric": ["loss"] * len(rows),
            "value": [r[2] for r in rows],
            "row_number": list(range(1, len(rows) + 1)),
        },
        schema_overrides={"flops": pl.Float64},
    )


def test_staged_rows_upsert_observations_on_its_key(tmp_path: Path) -> None:
    stage = bulk.staging(
        "observations", "_test_stage", lacks=("ingest_id",), extra={"row_number": "BIGINT"}
    )
    with store.connect(tmp_path / "db.duckdb") as con:
        store.run(con, stage.create)
        store.run_on_frame(con, _chunk([("r", 1, 4.0), ("r", 2, 3.9)]), "c", stage.fill("c"))
        store.run(con, stage.insert({"ingest_id": "first"}))
        store.run(con, stage.drop)
        # A later load of step 2 (and a new step 3), straight from a frame: it wins.
        later = _chunk([("r", 2, 3.5), ("r", 3, 3.4)])
        store.run_on_frame(con, later, "c", stage.delete_keys("c"))
        store.run_on_frame(con, later, "c", stage.insert({"ingest_id": "it's later"}, "c"))
        rows = store.run(con, "SELECT step, value, ingest_id FROM observations ORDER BY step")
    assert rows == [(1, 4.0, "first"), (2, 3.5, "it's later"), (3, 3.4, "it's later")]


@pytest.mark.parametrize(
    "table, lacks", [("quarantine", ()), ("observations", ("run_id",)), ("ingests", ("ingest_id",))]
)
def test_staging_refuses_a_table_it_cannot_upsert(table: str, lacks: tuple[str, ...]) -> None:
    with pytest.raises(StoreError):
        bulk.staging(table, "_s", lacks=lacks)
