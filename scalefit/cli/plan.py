"""``scalefit plan``: compute-optimal, data-constrained and inference-aware choices for a
compute budget, under any law in the store (published or fitted)."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from ._common import DEFAULT_DB_PATH, console, handle_errors, human_count, json_line, read_settings
from .options import (
    ConfigOption,
    FlopsOption,
    InferenceTokensOption,
    JsonOption,
    LawIdOption,
    PlanDbOption,
    TargetLossOption,
    UniqueTokensOption,
)

if TYPE_CHECKING:
    from ..laws import Law

DEFAULT_LAW = "besiroglu2024"
"""The law `plan` uses without --law: Besiroglu et al.'s refit of Hoffmann et al.'s approach 3
(the printed approach-3 constants are not the optimum of their own objective)."""


def load_law(law_id: str, db: Path | None) -> tuple[Law, list[Law], str, str | None]:
    """The law ``law_id`` and its bootstrap sample laws (from ``fit_samples``, for a fitted
    law), from the store at ``db`` when the file exists, else from the curated datasets.
    Returns ``(law, sample_laws, where, caveat)`` (``caveat``: the ``laws.caveat`` column)."""
    from .. import store
    from ..errors import UnknownLawError
    from ..laws import law_from_parameters
    from ..load.curated import read_curated

    path = db or DEFAULT_DB_PATH
    samples: list[Law] = []
    samples_frame = None
    if path.is_file():
        with store.connect(path, read_only=True) as con:
            laws = store.query(con, "SELECT law_id, form, parameters, fit_id, caveat FROM laws")
            row = laws.filter(laws["law_id"] == law_id)
            if row.height:
                fit_id = row["fit_id"][0]
                if fit_id is not None:
                    samples_frame = store.query(
                        con,
                        "SELECT sample, parameter, value FROM fit_samples WHERE fit_id = ? "
                        "ORDER BY sample",
                        [fit_id],
                    )
        where = str(path)
    else:
        laws = read_curated().laws
        row = laws.filter(laws["law_id"] == law_id)
        where = "the curated datasets (no database at " + str(path) + ")"
    if not row.height:
        known = ", ".join(sorted(laws["law_id"].to_list()))
        raise UnknownLawError(
            f"no law `{law_id}` in {where}; choose one of: {known} (or fit and save one with "
            "`scalefit fit --save`)"
        )
    form = row["form"][0]
    law = law_from_parameters(form, json.loads(row["parameters"][0]))
    if samples_frame is not None:
        names = set(law.parameters())
        for (_,), group in samples_frame.group_by("sample", maintain_order=True):
            values = dict(zip(group["parameter"], group["value"], strict=True))
            if names <= set(values):
                samples.append(law_from_parameters(form, {k: values[k] for k in names}))
    return law, samples, where, row["caveat"][0]


def _fmt(value: float | None, *, count: bool = True) -> str:
    if value is None:
        return ""
    return human_count(value) if count else f"{value:.4g}"


def _ci(point: Any, name: str, *, count: bool = True) -> str:
    if name not in point.ci:
        return ""
    lo, hi = point.ci[name]
    return f" [{_fmt(lo, count=count)}, {_fmt(hi, count=count)}]"


def register(app: typer.Typer) -> None:
    """Register ``scalefit plan`` on ``app``."""
    app.command("plan")(plan_command)


@handle_errors
def plan_command(
    flops: FlopsOption,
    law: LawIdOption = DEFAULT_LAW,
    unique_tokens: UniqueTokensOption = None,
    inference_tokens: InferenceTokensOption = None,
    target_loss: TargetLossOption = None,
    as_json: JsonOption = False,
    db: PlanDbOption = None,
    config: ConfigOption = None,
) -> None:
    """Plan a training run: compute-optimal N and D for --flops, and, where asked, the
    data-constrained optimum (--unique-tokens; Muennighoff et al. 2023) and the
    inference-aware optimum (--inference-tokens; Sardana et al. 2023).

    Intervals are shown for a fitted law whose bootstrap samples are in the store.
    """
    from ..errors import AllocationUnavailableError
    from ..plan import plan_budget

    db = read_settings(config, db=("--db", db)).db
    value, samples, _, caveat = load_law(law, db)
    try:
        result = plan_budget(
            value,
            flops,
            unique_tokens=unique_tokens,
            inference_tokens=inference_tokens,
            target_loss=target_loss,
            law_id=law,
            sample_laws=samples,
        )
    except AllocationUnavailableError as exc:
        raise AllocationUnavailableError(f"`{law}`: {exc}") from exc
    if as_json:
        out = result.to_json()
        out["law"]["caveat"] = caveat
        sys.stdout.write(json_line(out) + "\n")
        return
    print_plan(result, flops, law, caveat)


_ROWS: tuple[tuple[str, Callable[[Any], str]], ...] = (
    ("params", lambda p: _fmt(p.params) + _ci(p, "params")),
    ("tokens", lambda p: _fmt(p.tokens) + _ci(p, "tokens")),
    (
        "tokens/param",
        lambda p: _fmt(p.tokens_per_param, count=False) + _ci(p, "tokens_per_param", count=False),
    ),
    ("loss", lambda p: _fmt(p.loss, count=False) + _ci(p, "loss", count=False)),
    ("epochs", lambda p: _fmt(p.epochs, count=False) + _ci(p, "epochs", count=False)),
    ("training FLOPs", lambda p: f"{p.training_flops:.3g}"),
    ("total FLOPs", lambda p: "" if p.total_flops is None else f"{p.total_flops:.3g}"),
)
"""The rows of the plan table: a label and how each plan's cell is written."""


def print_plan(result: Any, flops: float, law: str, caveat: str | None) -> None:
    """The plan as a table (one column per optimum asked for), then its notes."""
    from rich.table import Table

    table = Table(title=f"{flops:.3g} FLOPs under {law} ({result.law_form})")
    table.add_column("", justify="left", no_wrap=True)
    points = [
        (label, p)
        for label, p in (
            ("compute-optimal", result.compute_optimal),
            ("data-constrained", result.data_constrained),
            ("inference-aware", result.inference_aware),
        )
        if p is not None
    ]
    for label, _ in points:
        table.add_column(label, justify="right")
    for name, cell in _ROWS:
        cells = [cell(p) for _, p in points]
        if any(cells):
            table.add_row(name, *cells)
    console.print(table)
    aware = result.inference_aware
    if aware is not None:
        base = "data-constrained" if result.data_constrained is not None else "compute-optimal"
        console.print(
            f"inference-aware vs {base} at loss {aware.loss:.4g} serving "
            f"{human_count(aware.inference_tokens)} tokens: "
            f"{aware.total_flops:.3g} vs {aware.compute_optimal_total_flops:.3g} FLOPs in total "
            f"(training + inference), saving {aware.saving_fraction:.1%}",
            highlight=False,
        )
    for note in result.notes:
        console.print(f"note: {note}", highlight=False, markup=False)
    if caveat:
        console.print(f"caveat ({law}): {caveat}", highlight=False, markup=False)
