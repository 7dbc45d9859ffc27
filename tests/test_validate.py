"""Row validation: every failure found, said in words, with the row it came from."""

from __future__ import annotations

import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scalefit.errors import ValidationError
from scalefit.load.validate import validate_frame
from scalefit.schemas import ObservationSchema, SourceSchema


def _obs(**cols: list) -> pl.DataFrame:
    n = len(next(iter(cols.values())))
    base = {
        "run_id": ["r"] * n,
        "step": [str(i) for i in range(n)],
        "tokens": [None] * n,
        "flops": [None] * n,
        "metric": ["loss"] * n,
        "value": ["1.0"] * n,
        "ingest_id": [None] * n,
    }
    base.update(cols)
    return pl.DataFrame(base, schema=dict.fromkeys(base, pl.String))


def test_good_rows_pass_typed() -> None:
    result = validate_frame(_obs(value=["3.5", "2.5"]), ObservationSchema)
    assert result.ok
    assert result.valid.schema["step"] == pl.Int64
    assert result.valid["value"].to_list() == [3.5, 2.5]


def test_each_bad_row_gets_its_reasons_and_raw_content() -> None:
    frame = _obs(value=["2.0", "-1", "NaN", "abc", "1.5"], step=["0", "1", "2", "3", "4.5"])
    result = validate_frame(frame, ObservationSchema, row_numbers=pl.Series([10, 11, 12, 13, 14]))
    assert result.valid.height == 1
    reasons = dict(zip(result.rejected["row_number"], result.rejected["reason"], strict=True))
    assert (
        reasons[11] == "`value` = -1.0: must be > 0 (a loss) or in [0, 1] (an `accuracy:` metric)"
    )
    assert reasons[12] == "`value` = NaN: must be a finite number (not NaN or infinity)"
    assert reasons[13] == "`value` = abc is not a number"
    assert reasons[14] == "`step` = 4.5 is not a whole number"
    raw = result.rejected.filter(pl.col("row_number") == 13)["raw"][0]
    assert '"value":"abc"' in raw


def test_a_loss_must_be_positive_an_accuracy_within_zero_and_one() -> None:
    frame = _obs(
        metric=["loss", "accuracy:arc", "accuracy:arc2", "accuracy:arc3", "accuracy"],
        value=["0", "0", "1", "1.5", "0"],
    )
    result = validate_frame(frame, ObservationSchema)
    assert result.valid["metric"].to_list() == ["accuracy:arc", "accuracy:arc2"]
    assert sorted(result.rejected["row_number"].to_list()) == [1, 4, 5]


def test_duplicate_keys_name_the_key() -> None:
    result = validate_frame(_obs(step=["1", "1"]), ObservationSchema)
    assert result.rejected.height == 2
    assert set(result.rejected["reason"]) == {"duplicate key (`run_id`, `metric`, `step`)"}


def test_missing_and_unexpected_columns_are_frame_errors() -> None:
    with pytest.raises(ValidationError) as info:
        validate_frame(
            _obs(value=["1"]).drop("metric").with_columns(x=pl.lit(1)), ObservationSchema
        )
    assert info.value.missing == ["metric"]
    assert info.value.extra == ["x"]
    filled = validate_frame(
        pl.DataFrame({"source_id": ["a"], "title": ["T"], "kind": ["paper"]}),
        SourceSchema,
        fill_missing=True,
    )
    assert filled.ok and filled.valid["url"].to_list() == [None]


# No deadline: a timing limit is no property of validation (it failed once under load).
@settings(deadline=None)
@given(
    st.lists(
        st.one_of(
            st.floats(allow_nan=True, allow_infinity=True).map(str),
            st.text(max_size=5),
            st.none(),
        ),
        min_size=1,
        max_size=30,
    )
)
def test_nothing_is_dropped_silently(values: list[str | None]) -> None:
    frame = _obs(value=values)
    result = validate_frame(frame, ObservationSchema)
    # Every row is either valid or rejected with a reason; none vanishes.
    assert result.valid.height + result.rejected.height == frame.height
    assert result.rejected["reason"].str.len_chars().min() or result.rejected.height == 0
    assert (result.valid["value"] >= 0).all() and result.valid["value"].is_finite().all()
