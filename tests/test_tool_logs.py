"""Logs shaped exactly as the tools write them, through the real ``scalefit ingest`` command
into a real DuckDB file (issue 15): a Hugging Face Trainer ``trainer_state.json``, W&B
run-history exports (the HF integration's and nanoGPT's keys, as ``pandas.to_csv`` writes
``run.history()``), and nanoGPT-style JSON Lines; and where each run's tokens come from.

How each tool writes (checked against real files and the tools' source):

- ``TrainerState.save_to_json``: ``json.dumps(dataclasses.asdict(state), indent=2,
  sort_keys=True) + "\\n"``. Every ``Trainer.log`` call appends ``{**logs, "epoch",
  "step"}`` to ``log_history``, plus ``num_input_tokens_seen`` when
  ``include_num_input_tokens_seen`` is on (train and eval entries alike); ``eval_on_start``
  evaluates at step 0; the closing entry has ``train_runtime`` and a run-average
  ``train_loss``. The learning-rate scheduler is a ``TrainingArguments`` field
  (``training_args.bin``, a pickle): the state does not record it.
- W&B's ``WandbCallback.on_log`` logs ``rewrite_logs(logs)`` (``eval_x`` -> ``eval/x``, others
  ``train/x``) with ``train/global_step``; a run's ``history()`` is a pandas frame with
  ``_step``, ``_runtime``, ``_timestamp``, written by ``to_csv`` with its index as a first
  column with an empty header, missing values as empty cells, and any integer column that
  has a missing value as floats (``100.0``).
- nanoGPT's ``train.py`` evaluates at ``iter_num % eval_interval == 0`` (iter 0 included),
  logging ``{"iter", "train/loss", "val/loss", "lr", "mfu"}`` to W&B, and prints the
  training loss every ``log_interval`` iterations; tokens per iteration are
  ``gradient_accumulation_steps * batch_size * block_size``.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from ingest_files import loss_curve, rows
from typer.testing import CliRunner

from scalefit.cli import app

TOKENS_PER_ITER = 40 * 12 * 1024
"""nanoGPT's default ``gradient_accumulation_steps * batch_size * block_size``."""


def ingest(db: Path, *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, ["ingest", *args, "--db", str(db)])
    return result.exit_code, result.output


def no_quarantine(db: Path) -> None:
    assert rows(db, "SELECT path, row_number, reason FROM quarantine") == []


# ---------------------------------------------------------------- Hugging Face Trainer


def write_trainer_state(
    output_dir: Path, *, steps: int = 200, logging_steps: int = 20, eval_steps: int = 100
) -> Path:
    """``checkpoint-<steps>/trainer_state.json`` and the model's ``config.json`` as a GPT-2
    Trainer run with ``include_num_input_tokens_seen=True`` and ``eval_on_start=True``
    leaves them (8 sequences of 512 tokens per step)."""
    per_step = 8 * 512
    folder = output_dir / f"checkpoint-{steps}"
    folder.mkdir(parents=True)
    history: list[dict] = []

    def evaluate(step: int) -> None:
        history.append(
            {
                "epoch": step / steps,
                "eval_loss": loss_curve(step, 3.1e6, per_step) + 0.04,
                "eval_runtime": 3.2101,
                "eval_samples_per_second": 155.76,
                "eval_steps_per_second": 19.47,
                "num_input_tokens_seen": step * per_step,
                "step": step,
            }
        )

    evaluate(0)
    for step in range(logging_steps, steps + 1, logging_steps):
        history.append(
            {
                "epoch": step / steps,
                "grad_norm": 2.0 / math.sqrt(step),
                "learning_rate": 5e-4 * (1 - step / steps),
                "loss": round(loss_curve(step, 3.1e6, per_step), 4),
                "num_input_tokens_seen": step * per_step,
                "step": step,
            }
        )
        if step % eval_steps == 0:
            evaluate(step)
    history.append(
        {
            "epoch": 1.0,
            "num_input_tokens_seen": steps * per_step,
            "step": steps,
            "total_flos": 2.1e14,
            "train_loss": 4.4,
            "train_runtime": 120.7,
            "train_samples_per_second": 13.3,
            "train_steps_per_second": 1.66,
        }
    )
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
        "num_input_tokens_seen": steps * per_step,
        "num_train_epochs": 1,
        "save_steps": steps,
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
        "total_flos": 2.1e14,
        "train_batch_size": 8,
        "trial_name": None,
        "trial_params": None,
    }
    config = {
        "architectures": ["GPT2LMHeadModel"],
        "model_type": "gpt2",
        "n_ctx": 512,
        "n_embd": 256,
        "n_head": 4,
        "n_layer": 4,
        "n_positions": 512,
        "vocab_size": 50257,
    }
    (folder / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    path = folder / "trainer_state.json"
    path.write_text(json.dumps(state, indent=2, sort_keys=True) + "\n")
    return path


def test_a_trainer_state_ingests_with_its_token_counter(tmp_path: Path, db_path: Path) -> None:
    write_trainer_state(tmp_path / "gpt2-tiny")
    code, out = ingest(db_path, str(tmp_path / "gpt2-tiny"), "--schedule", "cosine")
    assert code == 0, out
    no_quarantine(db_path)
    assert rows(
        db_path, "SELECT run_id, params, params_method, tokens, flops, schedule FROM runs"
    ) == [("gpt2-tiny", 12 * 4 * 256**2, "config_12ld2", 200 * 4096.0, 2.1e14, "cosine")]
    got = rows(db_path, "SELECT metric, step, tokens FROM observations ORDER BY metric, step")
    assert got == [("eval_loss", s, s * 4096.0) for s in (0, 100, 200)] + [
        ("train_loss", s, s * 4096.0) for s in range(20, 201, 20)
    ]
    # the closing entry's run-average train_loss is not a measurement at step 200
    final = rows(
        db_path, "SELECT value FROM observations WHERE metric = 'train_loss' AND step = 200"
    )
    assert final == [(round(loss_curve(200, 3.1e6, 4096), 4),)]
    config = json.loads(rows(db_path, "SELECT config FROM runs")[0][0])
    assert "lr_scheduler_type" not in config and config["train_batch_size"] == 8


def test_a_trainer_state_declares_no_schedule(tmp_path: Path, db_path: Path) -> None:
    """The Trainer state has no scheduler: without run.json or --schedule it stays unknown."""
    write_trainer_state(tmp_path / "run")
    code, out = ingest(db_path, str(tmp_path / "run"))
    assert code == 0, out
    assert rows(db_path, "SELECT schedule FROM runs") == [(None,)]
