"""The loaders' shared parts, without a database: the ``ingests`` row (:class:`LoadInfo`), the
pure decision :func:`decide`, and the one place ingest ids are made."""

from __future__ import annotations

import dataclasses
import re

import pytest

from scalefit.load.info import (
    LoadInfo,
    Previous,
    Scan,
    decide,
    failed_unchanged,
    ingest_id,
    ingest_id_prefix,
    started,
)
from scalefit.schemas import TABLES

SHA = "ab" * 32
OTHER = "cd" * 32


def test_load_info_fields_are_the_ingests_columns_in_schema_order() -> None:
    columns = TABLES["ingests"].columns
    fields = [f.name for f in dataclasses.fields(LoadInfo)]
    assert fields[: len(columns)] == columns
    # What follows is reported, not stored: it must not collide with a column.
    assert set(fields[len(columns) :]) == {"mode", "runs", "warnings"}


def test_a_load_info_row_validates_against_the_ingests_schema() -> None:
    from scalefit.load.validate import validate_frame

    info = started("curated", "datasets/", sha256=SHA, format="curated").finished(3, 1, "done")
    checked = validate_frame(info.to_frame(), TABLES["ingests"].schema)
    assert checked.ok
    assert info.to_row()["rows_in"] == 4
    assert info.status == "rejected_rows"
    assert list(info.to_row()) == TABLES["ingests"].columns


def test_ingest_ids_keep_the_schemes_stores_hold() -> None:
    assert ingest_id("curated", SHA) == "curated-" + SHA[:16]
    assert ingest_id("upstream", SHA, "points") == "upstream-points-" + SHA[:16]
    assert ingest_id("study", SHA, "gadre2024") == "study-gadre2024-" + SHA[:16]
    assert ingest_id("study", SHA, "gadre2024").startswith(ingest_id_prefix("study", "gadre2024"))
    first, second = ingest_id("logs"), ingest_id("logs")
    assert re.fullmatch(r"[0-9a-f]{32}", first) and first != second


@pytest.mark.parametrize(
    "args", [("bogus", SHA, "x"), ("curated", None), ("upstream", SHA, None), ("study", "", "x")]
)
def test_ingest_id_refuses_what_it_cannot_make(args: tuple) -> None:
    with pytest.raises(ValueError):
        ingest_id(*args)


def test_decide_new_unchanged_replaced() -> None:
    assert decide(None, Scan(SHA), "s").mode == "new"
    assert decide(Previous(SHA, "s"), Scan(SHA), "s").mode == "unchanged"
    # Other bytes, other settings, or rows gone from the store: loaded again.
    assert decide(Previous(OTHER, "s"), Scan(SHA), "s").mode == "replaced"
    assert decide(Previous(SHA, "s"), Scan(SHA), "t").mode == "replaced"
    assert decide(Previous(SHA, "s", intact=False), Scan(SHA), "s").mode == "replaced"


def _grown(**changes: object) -> tuple[Previous, Scan]:
    prev = Previous(OTHER, "s", format="csv", checkpoint_bytes=100, checkpoint_sha256="p")
    scan = Scan(SHA, prefix_sha256="p", header_bytes=20, format="csv", appendable=True)
    return prev, dataclasses.replace(scan, **changes)


def test_decide_appends_to_a_grown_log_only_when_its_read_part_is_unchanged() -> None:
    prev, scan = _grown()
    decision = decide(prev, scan, "s")
    assert (decision.mode, decision.offset) == ("appended", 100)
    assert decide(prev, dataclasses.replace(scan, prefix_sha256="q"), "s").mode == "replaced"
    assert decide(prev, dataclasses.replace(scan, appendable=False), "s").mode == "replaced"
    assert decide(prev, dataclasses.replace(scan, format="jsonl"), "s").mode == "replaced"
    assert decide(prev, scan, "t").mode == "replaced"
    # A checkpoint inside the header (e.g. only a header was read) cannot be read on from.
    assert decide(prev, dataclasses.replace(scan, header_bytes=101), "s").mode == "replaced"
    nothing = dataclasses.replace(prev, checkpoint_bytes=0)
    assert decide(nothing, scan, "s").mode == "replaced"


def test_a_failure_on_the_same_bytes_and_settings_is_not_retried() -> None:
    last = {"status": "failed", "sha256": SHA, "settings_sha256": "s"}
    assert failed_unchanged(last, Scan(SHA), "s")
    assert not failed_unchanged(last, Scan(OTHER), "s")
    assert not failed_unchanged(last, Scan(SHA), "t")
    assert not failed_unchanged({**last, "status": "ok"}, Scan(SHA), "s")
    assert not failed_unchanged(None, Scan(SHA), "s")


def test_previous_from_an_ingests_row() -> None:
    row = {"sha256": SHA, "settings_sha256": "s", "format": "csv", "checkpoint_bytes": 5}
    prev = Previous.from_row(row, intact=False)
    assert prev == Previous(SHA, "s", "csv", 5, None, intact=False)
    assert Previous.from_row(None) is None
    assert isinstance(str(started("logs", "/x.csv")), str)
    assert isinstance(started("logs", "/x.csv"), LoadInfo)


def test_the_package_exports_resolve_lazily() -> None:
    import scalefit.load as load

    for name in load.__all__:
        assert getattr(load, name) is not None, name
    with pytest.raises(AttributeError):
        _ = load.no_such_name
