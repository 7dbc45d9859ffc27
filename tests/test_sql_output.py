"""`scalefit sql` prints every DuckDB type in every format, and `-f json` is strict JSON."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from scalefit import store
from scalefit.cli import app

runner = CliRunner()


@pytest.fixture
def empty_db(db_path: Path) -> Path:
    with store.connect(db_path):
        pass
    return db_path


def _sql(db: Path, query: str, fmt: str) -> str:
    result = runner.invoke(app, ["sql", "--db", str(db), "-f", fmt, "--", query])
    assert result.exit_code == 0, result.output
    assert "Traceback" not in result.output
    return result.stdout


def _strict_json(text: str) -> object:
    def refuse(token: str) -> None:
        raise AssertionError(f"not JSON: {token}")

    return json.loads(text, parse_constant=refuse)


@pytest.mark.parametrize(
    ("query", "as_json", "as_csv"),
    [
        ("select [1,2] as a", [{"a": [1, 2]}], [["a"], ["[1,2]"]]),
        ("select interval 1 day as a", [{"a": "1 day"}], [["a"], ["1 day"]]),
        ("select union_value(k := 1) as a", [{"a": {"k": 1}}], [["a"], ['{"k":1}']]),
        (
            "select {'x': 1, 'y': [1.5, 2.5]} as s, map {'k': 2} as m",
            [{"s": {"x": 1, "y": [1.5, 2.5]}, "m": {"k": 2}}],
            [["s", "m"], ['{"x":1,"y":[1.5,2.5]}', '{"k":2}']],
        ),
        (
            "select 170141183460469231731687303715884105727::hugeint as h, 1.25::decimal(5,2) as d",
            [{"h": 170141183460469231731687303715884105727, "d": 1.25}],
            [["h", "d"], ["170141183460469231731687303715884105727", "1.25"]],
        ),
        (
            "select 'infinity'::timestamp as t, date '2024-02-29' as d, 'ab'::blob as b",
            [{"t": "infinity", "d": "2024-02-29", "b": "ab"}],
            [["t", "d", "b"], ["infinity", "2024-02-29", "ab"]],
        ),
        ("select 1 as a, 2 as a", [{"a": 1, "a_1": 2}], [["a", "a_1"], ["1", "2"]]),
    ],
)
def test_every_type_prints_in_every_format(
    empty_db: Path, query: str, as_json: list, as_csv: list
) -> None:
    assert _strict_json(_sql(empty_db, query, "json")) == as_json
    assert list(csv.reader(io.StringIO(_sql(empty_db, query, "csv")))) == as_csv
    table = _sql(empty_db, query, "table")
    for cell in as_csv[1]:
        assert cell[:10] in table


def test_json_has_no_nan_or_infinity(empty_db: Path) -> None:
    out = _sql(
        empty_db,
        "select 'nan'::double as a, 'inf'::double as b, '-inf'::float as c, "
        "[1.0, 'nan'::double] as l, {'x': 'inf'::double} as s, 2.5 as ok",
        "json",
    )
    assert _strict_json(out) == [
        {"a": None, "b": None, "c": None, "l": [1.0, None], "s": {"x": None}, "ok": 2.5}
    ]


def test_values_are_never_read_as_markup(empty_db: Path) -> None:
    table = _sql(empty_db, "select '[/bold] [red]x' as \"[b]\"", "table")
    assert "[/bold] [red]x" in table and "[b]" in table
