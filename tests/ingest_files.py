"""Writers of real log files, shaped as the tools that make them write them (test helpers)."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import duckdb


def loss_curve(step: int, params: float = 1e7, tokens_per_step: float = 4096) -> float:
    """A Chinchilla-shaped loss: E + A/N^alpha + B/D^beta (Hoffmann et al. 2022, eq. 10)."""
    tokens = step * tokens_per_step
    return 1.69 + 406.4 / params**0.34 + 410.7 / max(tokens, 1.0) ** 0.28


def write_long_csv(path: Path, rows: list[dict], columns: list[str] | None = None) -> Path:
    """A long table as pandas/polars write it: header, comma-separated, trailing newline."""
    columns = columns or list(dict.fromkeys(k for row in rows for k in row))
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, columns, lineterminator="\n")
        writer.writeheader()
        for row in rows:
            writer.writerow({c: row.get(c, "") for c in columns})
    return path


def curve_rows(
    run_id: str, steps: range, *, params: float | None = None, eval_every: int = 0
) -> list[dict]:
    rows = []
    for s in steps:
        row = {"run_id": run_id, "step": s, "tokens": s * 4096, "loss": loss_curve(s)}
        if params is not None:
            row["params"] = params
        if eval_every and s % eval_every == 0:
            row["eval_loss"] = loss_curve(s) + 0.05
        rows.append(row)
    return rows


def write_trainer_state(
    folder: Path, *, steps: int = 100, logging_steps: int = 10, eval_steps: int = 50
) -> Path:
    """``trainer_state.json`` as ``transformers.TrainerState.save_to_json`` writes it:
    ``json.dumps(asdict(state), indent=2, sort_keys=True) + "\\n"``."""
    folder.mkdir(parents=True, exist_ok=True)
    history: list[dict] = []
    for step in range(logging_steps, steps + 1, logging_steps):
        history.append(
            {
                "epoch": round(step / steps, 4),
                "grad_norm": 1.5 / math.sqrt(step),
                "learning_rate": 5e-05 * (1 - step / steps),
                "loss": round(loss_curve(step, 1e7, 8192), 4),
                "step": step,
            }
        )
        if step % eval_steps == 0:
            history.append(
                {
                    "epoch": round(step / steps, 4),
                    "eval_loss": loss_curve(step, 1e7, 8192) + 0.05,
                    "eval_runtime": 1.2345,
                    "eval_samples_per_second": 81.0,
                    "eval_steps_per_second": 10.1,
                    "step": step,
                }
            )
    history.append(
        {
            "epoch": 1.0,
            "step": steps,
            "total_flos": 1.23e15,
            "train_loss": 3.21,
            "train_runtime": 100.5,
            "train_samples_per_second": 15.9,
            "train_steps_per_second": 0.99,
        }
    )
    return save_trainer_state(
        folder,
        history,
        steps=steps,
        logging_steps=logging_steps,
        eval_steps=eval_steps,
        save_steps=500,
        tokens_seen=0,
        total_flos=1234567890123456.0,
    )


def save_trainer_state(
    folder: Path,
    history: list[dict],
    *,
    steps: int,
    logging_steps: int,
    eval_steps: int,
    save_steps: int,
    tokens_seen: int,
    total_flos: float,
) -> Path:
    """The ``TrainerState`` around ``history`` (its ``log_history``), saved as
    ``TrainerState.save_to_json`` saves it."""
    state = {
        "best_global_step": None,
        "best_metric": None,
        "best_model_checkpoint": None,
        "epoch": 1.0,
        "eval_steps": eval_steps,
        "global_step": steps,
        "is_hyper_param_search": False,
        "is_local_process_zero": True,
        "is_world_process_zero": True,
        "log_history": history,
        "logging_steps": logging_steps,
        "max_steps": steps,
        "num_input_tokens_seen": tokens_seen,
        "num_train_epochs": 1,
        "save_steps": save_steps,
        "stateful_callbacks": {
            "TrainerControl": {
                "args": {
                    "should_epoch_stop": False,
                    "should_evaluate": False,
                    "should_log": False,
                    "should_save": True,
                    "should_training_stop": True,
                },
                "attributes": {},
            }
        },
        "total_flos": total_flos,
        "train_batch_size": 8,
        "trial_name": None,
        "trial_params": None,
    }
    path = folder / "trainer_state.json"
    path.write_text(json.dumps(state, indent=2, sort_keys=True) + "\n")
    return path


def write_wandb_history(path: Path, steps: range) -> Path:
    """A W&B run-history CSV export (the HF integration's keys: ``train/loss``…)."""
    columns = [
        "_step",
        "_runtime",
        "_timestamp",
        "train/loss",
        "train/learning_rate",
        "train/epoch",
        "train/global_step",
        "eval/loss",
    ]
    rows = []
    for i, s in enumerate(steps):
        rows.append(
            {
                "_step": i,
                "_runtime": 1.5 * i,
                "_timestamp": 1.7e9 + i,
                "train/loss": loss_curve(s),
                "train/learning_rate": 1e-4,
                "train/epoch": s / 1000,
                "train/global_step": s,
                "eval/loss": loss_curve(s) + 0.05 if s % 50 == 0 else "",
            }
        )
    return write_long_csv(path, rows, columns)


def write_wandb_wide(path: Path, runs: dict[str, list[int]], metric: str = "train/loss") -> Path:
    """A W&B chart export: ``Step`` then ``<run> - <metric>``, ``__MIN``, ``__MAX`` per run,
    every field quoted, empty cells where a run has no value at that step."""
    steps = sorted({s for ss in runs.values() for s in ss})
    header = ["Step"]
    for run in runs:
        header += [f"{run} - {metric}", f"{run} - {metric}__MIN", f"{run} - {metric}__MAX"]
    with path.open("w", newline="") as fh:
        writer = csv.writer(fh, quoting=csv.QUOTE_ALL, lineterminator="\n")
        writer.writerow(header)
        for s in steps:
            row: list[object] = [s]
            for ss in runs.values():
                v = loss_curve(s) if s in ss else ""
                row += [v, v, v]
            writer.writerow(row)
    return path


def rows(db: Path, sql: str, params: list | None = None) -> list[tuple]:
    """Fetch ``sql`` from the DuckDB file (opened read-only, then closed)."""
    con = duckdb.connect(str(db), read_only=True)
    try:
        return con.execute(sql, params or []).fetchall()
    finally:
        con.close()


def snapshot(db: Path) -> dict[str, list[tuple]]:
    """Every row of the tables ingest writes, sorted: for "nothing changed" checks."""
    out = {}
    for table in ("runs", "observations", "ingests", "quarantine"):
        out[table] = sorted(rows(db, f"SELECT * FROM {table}"), key=repr)
    return out
