"""One vocabulary, one law registry: every list of law forms, law names, procedures, log
formats and upstream kinds agrees with ``schemas/vocabulary.py``.

A law form added in one place only (the vocabulary, the registry of :mod:`scalefit.laws`,
the fitting forms, the command line, the settings, the curated files) fails here.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys

import numpy as np
import pandera.polars as pa
import polars as pl
import pytest
import typer

from scalefit import fit as fitting
from scalefit._names import LAW_NAMES as CLI_LAW_NAMES
from scalefit.cli import app
from scalefit.config import Settings
from scalefit.errors import AllocationUnavailableError, UnknownLawError
from scalefit.laws import LAW_FORMS, REGISTRY, Law, LossLaw, law_from_parameters
from scalefit.load import readers, upstream
from scalefit.load.curated import read_curated
from scalefit.schemas import vocabulary as vocab
from scalefit.schemas.laws import LawParameterSchema, LawSchema
from scalefit.schemas.runs import RunSchema
from scalefit.schemas.upstream import UpstreamSnapshotSchema

_ALLOCATION_PARAMETERS = {"params_exp": 0.5, "params_coef": 0.1}
"""An ``allocation`` law that states a coefficient (every other form: 0.3 for each parameter)."""


def _example(form: str) -> Law:
    """A law of ``form`` with every parameter set (values chosen only to be valid)."""
    record = REGISTRY[form]
    if form == "allocation":
        return law_from_parameters(form, _ALLOCATION_PARAMETERS)
    return law_from_parameters(form, dict.fromkeys(record.parameters, 0.3))


def _isin(schema: type[pa.DataFrameModel], column: str) -> set[str]:
    """The allowed values of ``column``'s ``isin`` check."""
    checks = schema.to_schema().columns[column].checks
    (check,) = [c for c in checks if c.name == "isin"]
    return set(check.statistics["allowed_values"])


def test_vocabulary_lists_are_sets() -> None:
    for words in (
        vocab.LAW_FORMS,
        vocab.PROCEDURES,
        vocab.PARAMETRIC_FORMS,
        vocab.LOG_FORMATS,
        vocab.POINT_MODES,
        vocab.METRIC_PREFERENCE,
        vocab.SCHEDULES,
    ):
        assert len(words) == len(set(words)), words
    assert vocab.PROCEDURES == ("parametric", "isoflop", "envelope")
    assert not set(vocab.PROCEDURES) & set(vocab.LAW_FORMS)  # a procedure is not a law form
    assert set(vocab.PARAMETRIC_FORMS) <= set(vocab.LAW_FORMS)
    assert vocab.LINE_LOG_FORMATS <= set(vocab.LOG_FORMATS)


def test_registry_has_one_record_per_vocabulary_form() -> None:
    assert set(REGISTRY) == set(vocab.LAW_FORMS)
    assert set(LAW_FORMS) == set(vocab.LAW_FORMS) and len(LAW_FORMS) == len(vocab.LAW_FORMS)
    for form, record in REGISTRY.items():
        assert record.form == form == record.cls.form
        assert set(record.required) <= set(record.parameters)


def test_schemas_accept_exactly_the_vocabulary() -> None:
    assert _isin(LawSchema, "form") == set(vocab.LAW_FORMS)
    assert _isin(LawParameterSchema, "form") == set(vocab.LAW_FORMS)
    assert _isin(UpstreamSnapshotSchema, "kind") == set(vocab.UPSTREAM_KINDS)
    assert _isin(UpstreamSnapshotSchema, "format") == set(vocab.UPSTREAM_FORMATS)
    assert _isin(RunSchema, "schedule") == set(vocab.SCHEDULES)


@pytest.mark.parametrize("form", vocab.LAW_FORMS)
def test_each_record_says_what_its_laws_do(form: str) -> None:
    record = REGISTRY[form]
    law = _example(form)
    assert isinstance(law, Law) and law.form == form
    assert law_from_parameters(form, law.parameters()) == law  # how it is stored, and back
    assert isinstance(law, LossLaw) == record.has_loss
    if record.has_loss:
        assert np.isfinite(law.loss(1e9, 2e10))  # type: ignore[attr-defined]
    if record.allocates == "never":
        with pytest.raises(AllocationUnavailableError, match=f"`{form}`"):
            law.allocation(1e21)
    else:
        opt = law.allocation(1e21)
        assert math.isclose(6.0 * float(opt.params) * float(opt.tokens), 1e21, rel_tol=1e-9)
    if record.allocates == "with_coefficients":
        exponents_only = {k: v for k, v in law.parameters().items() if not k.endswith("_coef")}
        with pytest.raises(AllocationUnavailableError):
            law_from_parameters(form, exponents_only).allocation(1e21)
    if record.required:
        with pytest.raises(UnknownLawError, match="needs parameter"):
            law_from_parameters(form, {})


def test_curated_laws_are_registered_forms_with_their_parameters() -> None:
    laws = read_curated().laws
    assert laws.height > 0
    assert set(laws["form"]) <= set(vocab.LAW_FORMS)
    for row in laws.iter_rows(named=True):
        law = law_from_parameters(row["form"], json.loads(row["parameters"]))
        assert law.form == row["form"], row["law_id"]


def test_law_names_name_a_fitted_form_or_a_procedure() -> None:
    assert CLI_LAW_NAMES is vocab.LAW_NAMES
    fitted = set(vocab.PARAMETRIC_FORMS) | (set(vocab.PROCEDURES) - {"parametric"})
    assert set(vocab.LAW_NAMES.values()) == fitted
    for name, what in vocab.LAW_NAMES.items():
        assert name == what.replace("_", "-")


def test_fitting_forms_are_the_parametric_forms() -> None:
    # scalefit.fit.REGISTRY: every form the one driver fits (``_e``: the same law with a term
    # E), the data-constrained one included; each names the law form it produces.
    base = {name.removesuffix("_e") for name in fitting.REGISTRY}
    assert base == set(vocab.PARAMETRIC_FORMS)
    assert set(fitting.FORMS) == set(fitting.REGISTRY) - {"data_constrained"}
    for name, form in fitting.REGISTRY.items():
        record = REGISTRY[name.removesuffix("_e")]
        assert set(record.required) <= set(form.names) <= set(record.parameters), name
    assert fitting.REGISTRY["data_constrained"].names == REGISTRY["data_constrained"].parameters
    for name, what in vocab.LAW_NAMES.items():
        assert fitting.named_form(name) == what


def _option(command: str, name: str) -> typer.core.TyperOption:
    """The real option ``name`` of ``scalefit <command>``, as typer builds it."""
    group = typer.main.get_command(app)
    cmd = group.commands[command]  # type: ignore[attr-defined]
    (param,) = [p for p in cmd.params if p.name == name]
    assert isinstance(param, typer.core.TyperOption)
    return param


def test_command_line_choices_come_from_the_vocabulary() -> None:
    law = _option("fit", "law")
    assert law.help is not None and ", ".join(vocab.LAW_NAMES) in law.help
    points = _option("fit", "points")
    assert points.help is not None and ", ".join(vocab.POINT_MODES) in points.help
    metric = _option("fit", "metric")
    assert ", ".join(vocab.METRIC_PREFERENCE) in str(metric.show_default)
    # typer < 0.28 (pyproject.toml): an option's type is a click-style Choice
    fmt = _option("ingest", "format").type
    assert fmt.name == "choice" and tuple(fmt.choices) == vocab.LOG_FORMATS  # type: ignore[attr-defined]
    schedule = _option("ingest", "schedule").type
    assert schedule.name == "choice" and tuple(schedule.choices) == vocab.SCHEDULES  # type: ignore[attr-defined]


def test_settings_accept_exactly_the_law_names() -> None:
    assert Settings(fit_laws=tuple(vocab.LAW_NAMES)).fit_laws == tuple(vocab.LAW_NAMES)
    for bad in ("kaplan_n", "isoflop_", "allocation", "parametric"):
        with pytest.raises(ValueError, match="unknown law"):
            Settings(fit_laws=(bad,))


def test_settings_accept_exactly_the_point_modes() -> None:
    for mode in vocab.POINT_MODES:
        assert Settings(fit_points=mode).fit_points == mode
    for bad in ("last", "all", "Final", ""):
        with pytest.raises(ValueError, match="unknown point mode"):
            Settings(fit_points=bad)


def test_loaders_use_the_vocabulary() -> None:
    assert readers.FORMATS is vocab.LOG_FORMATS
    assert readers.LINE_FORMATS is vocab.LINE_LOG_FORMATS
    assert set(vocab.LINE_LOG_FORMATS) <= set(vocab.LOG_FORMATS)
    assert upstream.KINDS is vocab.UPSTREAM_KINDS
    assert upstream.FORMATS is vocab.UPSTREAM_FORMATS


def _tiny_log(tmp_path, fmt: str):
    rows = [
        {"step": 1, "tokens": 1000, "eval_loss": 3.0},
        {"step": 2, "tokens": 2000, "eval_loss": 2.9},
    ]
    if fmt in ("csv", "wandb"):
        path = tmp_path / "log.csv"
        pl.DataFrame(rows).write_csv(path)
    elif fmt == "jsonl":
        path = tmp_path / "log.jsonl"
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    elif fmt == "parquet":
        path = tmp_path / "log.parquet"
        pl.DataFrame(rows).write_parquet(path)
    else:
        assert fmt == "trainer_state", f"a log format with no sample here: {fmt}"
        path = tmp_path / "trainer_state.json"
        path.write_text(json.dumps({"log_history": rows}))
    return path


@pytest.mark.parametrize("fmt", vocab.LOG_FORMATS)
def test_every_log_format_has_a_reader(tmp_path, fmt: str) -> None:
    # A format added to the vocabulary without a reader fails here (open_source refuses it).
    source = readers.open_source(_tiny_log(tmp_path, fmt), fmt, run_id="r")
    assert source.format == fmt


def test_a_frame_of_every_form_validates() -> None:
    frame = pl.DataFrame(
        {
            "law_id": [f"law_{i}" for i in range(len(vocab.LAW_FORMS))],
            "form": list(vocab.LAW_FORMS),
            "origin": "rule",
            "parameters": "{}",
        }
    ).with_columns(
        pl.lit(None, pl.String).alias(c)
        for c in ("source_id", "fit_id", "locator", "notes", "caveat")
    )
    LawSchema.validate(frame)
    with pytest.raises(pa.errors.SchemaError):
        LawSchema.validate(frame.with_columns(pl.lit("isoflop").alias("form")))


def test_the_vocabulary_loads_without_the_heavy_libraries() -> None:
    # `scalefit --help` lists the law names and log formats from the vocabulary: reading it
    # must not import numpy, polars or pandera (the schemas load on first use).
    code = (
        "import sys, scalefit._names, scalefit.schemas.vocabulary;"
        "print(sorted(m for m in ('numpy', 'polars', 'pandera') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
