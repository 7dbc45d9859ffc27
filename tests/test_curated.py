"""The curated datasets validate, cross-check, and fail loudly (file, row, column) when broken."""

from __future__ import annotations

import shutil
import tomllib
from pathlib import Path

import polars as pl
import pytest

from scalefit.errors import DatasetError
from scalefit.load.curated import datasets_dir, read_curated, read_sources
from scalefit.schemas import FAMILIES

SHIPPED = datasets_dir()


@pytest.fixture
def datasets_copy(tmp_path: Path) -> Path:
    """A writable copy of the shipped datasets."""
    return Path(shutil.copytree(SHIPPED, tmp_path / "datasets"))


def _edit_csv(path: Path, row: int, column: str, value: str) -> None:
    """Set one cell (``row`` counted from 0 over data rows) of a CSV, keeping everything else."""
    frame = pl.read_csv(path, infer_schema=False)
    frame = frame.with_columns(
        pl.when(pl.int_range(pl.len()) == row)
        .then(pl.lit(value))
        .otherwise(pl.col(column))
        .alias(column)
    )
    frame.write_csv(path)


def test_every_curated_table_validates() -> None:
    data = read_curated()
    counts = data.counts()
    assert counts["models"] >= 34
    assert set(data.models["family"]) == set(FAMILIES)
    assert data.models["model_id"].is_unique().all()
    # Every row cites a source that sources.toml defines, with a locator.
    known = set(data.sources["source_id"])
    for frame in (data.models, data.law_parameters, data.optimal_allocations):
        assert set(frame["source_id"]) <= known
        assert frame["locator"].is_not_null().all()


def test_required_rows_are_present() -> None:
    models = read_curated().models
    by_family = models.group_by("family").len().sort("family")
    expected = {
        "GPT-3": 8,
        "Gopher": 6,
        "Chinchilla": 1,
        "LLaMA": 4,
        "Llama 2": 4,
        "Llama 3": 2,
        "Llama 3.1": 3,
        "DeepSeek LLM": 2,
        "DeepSeek-V2": 1,
        "DeepSeek-V3": 1,
        "MT-NLG": 1,
        "PaLM": 1,
    }
    assert dict(by_family.iter_rows()) == expected


def test_moe_models_carry_active_parameters() -> None:
    models = read_curated().models.filter(pl.col("architecture") == "moe")
    assert set(models["family"]) == {"DeepSeek-V2", "DeepSeek-V3"}
    assert (models["active_params"] < models["params"]).all()


def test_training_flops_published_or_flagged_estimate() -> None:
    models = read_curated().models
    estimates = models.filter(pl.col("flops_is_estimate"))
    # C = 6 N D with N the active parameters, exactly, where no figure is published.
    expected = 6 * estimates["active_params"] * estimates["tokens"]
    assert (estimates["training_flops"] == expected).all()
    gpt3 = models.filter(pl.col("model_id") == "gpt3-175b").row(0, named=True)
    assert not gpt3["flops_is_estimate"]
    assert gpt3["training_flops"] == pytest.approx(3.14e23)


def test_published_laws_are_gathered_per_law() -> None:
    laws = read_curated().laws
    a3 = laws.filter(pl.col("law_id") == "hoffmann2022_approach3").row(0, named=True)
    assert a3["form"] == "chinchilla"
    assert a3["origin"] == "published"
    params = pl.Series([a3["parameters"]]).str.json_decode().struct.unnest().row(0, named=True)
    assert params == {"E": 1.69, "A": 406.4, "B": 410.7, "alpha": 0.34, "beta": 0.28}
    rule = laws.filter(pl.col("law_id") == "rule_20_tokens_per_param").row(0, named=True)
    assert rule["origin"] == "rule"


def test_sources_toml_entries_are_complete() -> None:
    doc = tomllib.loads((SHIPPED / "sources.toml").read_text())
    for source_id, entry in doc["sources"].items():
        assert entry.get("title"), source_id
        assert entry.get("url", "").startswith("https://"), source_id
        assert entry.get("year"), source_id


def test_negative_params_names_file_row_and_column(datasets_copy: Path) -> None:
    path = datasets_copy / "gpt3.csv"
    _edit_csv(path, row=2, column="params", value="-7.6e8")
    with pytest.raises(DatasetError) as info:
        read_curated(datasets_copy)
    err = info.value
    assert err.path == str(path)
    assert err.row_number == 4  # data row 3 is line 4 of the file (header is line 1)
    assert err.column == "params"
    assert "gpt3.csv" in str(err) and "row 4" in str(err) and "`params`" in str(err)


def test_unknown_source_is_rejected(datasets_copy: Path) -> None:
    path = datasets_copy / "llama.csv"
    _edit_csv(path, row=0, column="source_id", value="nobody2099")
    with pytest.raises(DatasetError) as info:
        read_curated(datasets_copy)
    assert info.value.path == str(path)
    assert info.value.row_number == 2
    assert info.value.column == "source_id"
    assert "nobody2099" in str(info.value)


def test_duplicate_key_within_a_file(datasets_copy: Path) -> None:
    path = datasets_copy / "gopher.csv"
    first = pl.read_csv(path, infer_schema=False)["model_id"][0]
    _edit_csv(path, row=1, column="model_id", value=first)
    with pytest.raises(DatasetError) as info:
        read_curated(datasets_copy)
    assert info.value.path == str(path)
    assert info.value.column == "model_id"
    assert info.value.row_number in (2, 3)
    assert "duplicated" in str(info.value)


def test_duplicate_key_across_files(datasets_copy: Path) -> None:
    extra = pl.read_csv(datasets_copy / "gpt3.csv", infer_schema=False).head(1)
    extra.write_csv(datasets_copy / "zz_copy.csv")
    with pytest.raises(DatasetError, match="duplicate `model_id` across files: gpt3-small"):
        read_curated(datasets_copy)


def test_text_in_numeric_column_and_bad_architecture(datasets_copy: Path) -> None:
    path = datasets_copy / "deepseek.csv"
    _edit_csv(path, row=0, column="tokens", value="2T")
    _edit_csv(path, row=1, column="architecture", value="sparse")
    with pytest.raises(DatasetError) as info:
        read_curated(datasets_copy)
    reasons = [f["reason"] for f in info.value.failures]
    assert any("`tokens` = 2T is not a number" in r for r in reasons)
    assert any("`architecture` = sparse" in r and "one of" in r for r in reasons)


def test_active_params_above_total_is_rejected(datasets_copy: Path) -> None:
    path = datasets_copy / "deepseek.csv"
    frame = pl.read_csv(path, infer_schema=False)
    row = frame["architecture"].to_list().index("moe")
    _edit_csv(path, row=row, column="active_params", value="9e12")
    with pytest.raises(DatasetError, match="active_params"):
        read_curated(datasets_copy)


def test_unknown_table_and_bad_toml(datasets_copy: Path) -> None:
    (datasets_copy / "junk.csv").write_text("name,value\na,1\n")
    with pytest.raises(DatasetError, match="unknown table"):
        read_curated(datasets_copy)
    (datasets_copy / "junk.csv").unlink()
    (datasets_copy / "sources.toml").write_text("[sources.x\n")
    with pytest.raises(DatasetError, match=r"sources\.toml"):
        read_curated(datasets_copy)


def test_source_with_unknown_kind(tmp_path: Path) -> None:
    path = tmp_path / "sources.toml"
    path.write_text('[sources.a]\ntitle = "T"\nkind = "blog"\n')
    with pytest.raises(DatasetError, match=r"\[sources.a\].*kind"):
        read_sources(path)
