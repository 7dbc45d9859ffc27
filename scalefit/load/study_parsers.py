"""The parsers of published studies: a study's verified files -> ``runs`` and ``observations``
rows, and a reason for every run file that cannot be read (see :mod:`scalefit.load.studies`).
A parser is registered in :data:`PARSERS` with a version: a new version loads the study again.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .studies import Study

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Parsed:
    """What a parser made of a study's files."""

    runs: list[dict[str, Any]]
    observations: list[dict[str, Any]]
    rejected: list[tuple[str, str, str]]
    """``(path, raw text (truncated), reason)`` of each run file or row that could not be
    read; those runs are quarantined and the others load."""


@dataclass(frozen=True, slots=True)
class Parser:
    """A registered parser: ``fn(study, files) -> Parsed``; bump ``version`` when its output
    changes so stored studies are loaded again."""

    fn: Callable[[Study, Mapping[str, Path]], Parsed]
    version: int


GADRE_CORPORA = {"c4_original": "C4", "rpj": "RedPajama", "rw_original": "RefinedWeb"}
"""The testbed's training corpora (file-name prefix -> name in the paper)."""


GADRE_DEFAULT_SET = "c4_val"
"""The paper's default validation set: C4 eval."""


def _gadre_set(val_data: list[str]) -> str:
    """A validation set's name as the paper's code names it (``scaling/shared.py``)."""
    first = val_data[0]
    name = first.split("/")[-2]
    if "de-en" in name:
        name = first.split("/")[-1].split(".")[0]
    return name


def _positive(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{what} is {value!r}, not a number")
    value = float(value)
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"{what} is {value!r}, not a positive finite number")
    return value


def _gadre_run(
    study: Study, model: dict[str, Any], evals: dict[str, Any] | None, path: str
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    name = model["name"]
    if not isinstance(name, str) or not name:
        raise ValueError("`name` is missing")
    hp = model["hyperparameters"]
    params = _positive(hp["params"], "hyperparameters.params")
    tokens = _positive(hp["tokens"], "hyperparameters.tokens")
    corpus = model.get("dataset_name")
    if corpus not in GADRE_CORPORA:
        raise ValueError(f"dataset_name {corpus!r} is not one of {', '.join(GADRE_CORPORA)}")
    run_id = f"{study.name}:{name}"
    flops = 6.0 * params * tokens
    config = {
        "study": study.name,
        "run": name,
        "dataset": corpus,
        "model": str(hp.get("model", "")).split("/")[-1].split(".")[0],
        "chinchilla_multiplier": hp.get("chinchilla_multiplier"),
        "tokens_per_param": tokens / params,
        "params_no_embed": hp.get("params_no_embed"),
        "file": path,
        "sha256": study.sha256_of(path),
    }
    run = _run_row(study, run_id, f"{study.name}/{corpus}", params, tokens, flops, config)
    obs: list[dict[str, Any]] = []

    def add(metric: str, value: Any) -> None:
        obs.append({"run_id": run_id, "metric": metric, "value": float(value)})

    sets: set[str] = set()
    for result in model["results"]:
        s = _gadre_set(result["val_data"])
        if s in sets:
            raise ValueError(f"validation set {s!r} appears twice")
        sets.add(s)
        add(f"eval_loss:{s}", _positive(result["loss"], f"loss of {s}"))
        add(f"eval_loss_lower95:{s}", result["loss_sequences_lower_95"])
        add(f"eval_loss_upper95:{s}", result["loss_sequences_upper_95"])
        if s == GADRE_DEFAULT_SET:
            add("eval_loss", result["loss"])
    if GADRE_DEFAULT_SET not in sets:
        raise ValueError(f"no {GADRE_DEFAULT_SET} result (the paper's default loss)")
    if evals is not None:
        for task, acc in evals["eval_metrics"]["icl"].items():
            add(f"accuracy:{task}", acc)
    for o in obs:
        o.update({"step": 0, "tokens": tokens, "flops": flops})
    return run, obs


def parse_gadre2024(study: Study, files: Mapping[str, Path]) -> Parsed:
    """Gadre et al. (2024): ``exp_data/models/<run>.json`` (one run: sizes, tokens, 8
    validation losses) and ``exp_data/evals/evaluation_<run>_heavy.json`` (46 downstream
    accuracies). A run file that cannot be read (bad JSON, a missing or non-positive field, an
    unknown corpus) is rejected with the reason; its evaluation file then is not used."""
    runs: list[dict[str, Any]] = []
    observations: list[dict[str, Any]] = []
    rejected: list[tuple[str, str, str]] = []
    for path in sorted(p for p in files if p.startswith("exp_data/models/")):
        raw = files[path].read_bytes()
        stem = Path(path).stem
        eval_path = f"exp_data/evals/evaluation_{stem}_heavy.json"
        try:
            try:
                model = json.loads(raw)
            except (UnicodeDecodeError, json.JSONDecodeError) as exc:
                raise ValueError(f"not valid JSON ({exc})") from None
            if not isinstance(model, dict):
                raise ValueError("not a JSON object")
            evals = None
            if eval_path in files:
                try:
                    evals = json.loads(files[eval_path].read_bytes())
                except (UnicodeDecodeError, json.JSONDecodeError) as exc:
                    raise ValueError(f"{eval_path} is not valid JSON ({exc})") from None
            if model.get("name") != stem:
                raise ValueError(f"`name` is {model.get('name')!r}, the file is {stem}")
            run, obs = _gadre_run(study, model, evals, path)
        except (KeyError, TypeError, ValueError, AttributeError, IndexError) as exc:
            reason = f"missing field {exc}" if isinstance(exc, KeyError) else str(exc)
            text = raw[:2000].decode("utf-8", errors="replace")
            rejected.append((path, text, f"{study.name}: {path}: {reason}"))
            continue
        runs.append(run)
        observations.extend(obs)
    return Parsed(runs, observations, rejected)


def parse_besiroglu2024(study: Study, files: Mapping[str, Path]) -> Parsed:
    """Besiroglu et al. (2024)'s ``data/svg_extracted_data.csv``: one run per row
    (``Model Size``, ``Training FLOP``, ``loss``); tokens = FLOP / (6 N) as the authors do.
    A row with a missing or non-positive value is rejected with the reason."""
    (path,) = files
    text = files[path].read_text(encoding="utf-8")
    runs: list[dict[str, Any]] = []
    observations: list[dict[str, Any]] = []
    rejected: list[tuple[str, str, str]] = []
    for i, row in enumerate(csv.DictReader(io.StringIO(text)), 1):
        try:
            params = _positive(_float(row.get("Model Size")), "Model Size")
            flops = _positive(_float(row.get("Training FLOP")), "Training FLOP")
            loss = _positive(_float(row.get("loss")), "loss")
        except ValueError as exc:
            rejected.append((f"{path}#row={i}", json.dumps(row), f"{study.name}: row {i}: {exc}"))
            continue
        run_id = f"{study.name}:{i}"
        tokens = flops / (6.0 * params)
        config = {
            "study": study.name,
            "run": str(i),
            "row_number": i,
            "derived": "tokens = flops / (6 params)",
            "file": path,
            "sha256": study.sha256_of(path),
        }
        runs.append(_run_row(study, run_id, study.name, params, tokens, flops, config))
        observations.append(
            {
                "run_id": run_id,
                "step": 0,
                "tokens": tokens,
                "flops": flops,
                "metric": "loss",
                "value": loss,
            }
        )
    return Parsed(runs, observations, rejected)


def _float(value: Any) -> Any:
    try:
        return float(value)
    except (TypeError, ValueError):
        return value


def _run_row(
    study: Study,
    run_id: str,
    project: str,
    params: float,
    tokens: float,
    flops: float | None,
    config: dict[str, Any],
) -> dict[str, Any]:
    """A ``runs`` row of a study: counts as the paper gives them, its config as JSON."""
    return {
        "run_id": run_id,
        "project": project,
        "params": params,
        "params_method": "given",
        "tokens": tokens,
        "flops": flops,
        "config": json.dumps(config, sort_keys=True),
        "source_id": study.source_id,
    }


PARSERS: dict[str, Parser] = {
    "gadre2024": Parser(parse_gadre2024, 1),
    "besiroglu2024": Parser(parse_besiroglu2024, 1),
}
"""Registered parsers, by the name a declaration's ``parser`` gives."""
