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

from ingest_files import loss_curve, rows, save_trainer_state, snapshot
from typer.testing import CliRunner

from scalefit.cli import app
from scalefit.load import readers

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
    return save_trainer_state(
        folder,
        history,
        steps=steps,
        logging_steps=logging_steps,
        eval_steps=eval_steps,
        save_steps=steps,
        tokens_seen=steps * per_step,
        total_flos=2.1e14,
    )


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
    # the same command again writes nothing; another schedule re-reads the file
    before = snapshot(db_path)
    code, out = ingest(db_path, str(tmp_path / "gpt2-tiny"), "--schedule", "cosine")
    assert code == 0 and "unchanged" in out, out
    assert {t: v for t, v in snapshot(db_path).items() if t != "ingests"} == {
        t: v for t, v in before.items() if t != "ingests"
    }
    code, out = ingest(db_path, str(tmp_path / "gpt2-tiny"), "--schedule", "wsd")
    assert code == 0, out
    assert rows(db_path, "SELECT schedule FROM runs") == [("wsd",)]
    assert rows(db_path, "SELECT count(*) FROM observations") == [(13,)]


def test_a_trainer_state_declares_no_schedule(tmp_path: Path, db_path: Path) -> None:
    """The Trainer state has no scheduler: without run.json or --schedule it stays unknown."""
    write_trainer_state(tmp_path / "run")
    code, out = ingest(db_path, str(tmp_path / "run"))
    assert code == 0, out
    assert rows(db_path, "SELECT schedule FROM runs") == [(None,)]


# ---------------------------------------------------------------- W&B history exports


def _pandas_cell(value: object) -> str:
    """A cell as ``DataFrame.to_csv`` writes it: missing empty, floats by ``repr``."""
    if value is None:
        return ""
    return repr(value) if isinstance(value, float) else str(value)


def write_history_csv(path: Path, logged: list[dict]) -> Path:
    """``run.history()`` of the W&B calls ``logged`` (one dict per ``wandb.log``), written with
    ``to_csv()``: the index first (empty header), ``_runtime``/``_step``/``_timestamp``
    added by W&B, columns sorted, and a column with a missing cell written as floats."""
    history = [
        {"_runtime": 1.25 * i, "_step": i, "_timestamp": 1.7e9 + 1.25 * i, **entry}
        for i, entry in enumerate(logged)
    ]
    columns = sorted({k for row in history for k in row})
    floats = {c for c in columns if any(c not in row for row in history)}
    lines = ["," + ",".join(columns)]
    for i, row in enumerate(history):
        cells = []
        for c in columns:
            value = row.get(c)
            if c in floats and isinstance(value, int):
                value = float(value)
            cells.append(_pandas_cell(value))
        lines.append(f"{i}," + ",".join(cells))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    return path


def hf_wandb_logs(steps: int = 300, eval_every: int = 100) -> list[dict]:
    """What ``WandbCallback.on_log`` logs for a Trainer run: train and eval entries with
    ``train/global_step`` (and ``train/num_input_tokens_seen``)."""
    logged: list[dict] = []
    for step in range(10, steps + 1, 10):
        logged.append(
            {
                "train/epoch": step / steps,
                "train/global_step": step,
                "train/grad_norm": 1.0 / math.sqrt(step),
                "train/learning_rate": 3e-4,
                "train/loss": loss_curve(step, 2e7, 2048),
                "train/num_input_tokens_seen": step * 2048,
            }
        )
        if step % eval_every == 0:
            logged.append(
                {
                    "eval/loss": loss_curve(step, 2e7, 2048) + 0.03,
                    "eval/runtime": 2.5,
                    "eval/samples_per_second": 100.0,
                    "eval/steps_per_second": 12.5,
                    "train/epoch": step / steps,
                    "train/global_step": step,
                    "train/num_input_tokens_seen": step * 2048,
                }
            )
    return logged


def test_a_wandb_history_export_of_a_trainer_run(tmp_path: Path, db_path: Path) -> None:
    folder = tmp_path / "wandb-hf"
    write_history_csv(folder / "history.csv", hf_wandb_logs())
    (folder / "run.json").write_text(json.dumps({"params": "20M", "schedule": "wsd"}))
    code, out = ingest(db_path, str(folder))
    assert code == 0, out
    no_quarantine(db_path)
    assert rows(db_path, "SELECT run_id, params, tokens, schedule FROM runs") == [
        ("wandb-hf", 2e7, 300 * 2048.0, "wsd")
    ]
    got = rows(
        db_path, "SELECT metric, count(*), min(step), max(step) FROM observations GROUP BY 1"
    )
    assert sorted(got) == [("eval_loss", 3, 100, 300), ("train_loss", 30, 10, 300)]
    note = rows(db_path, "SELECT message FROM ingests")[0][0]
    assert "ignored columns: (unnamed), _runtime, _step, _timestamp, eval/runtime" in note
    # the trainer's step, not W&B's `_step` (which counts log calls)
    assert rows(
        db_path, "SELECT count(*) FROM observations WHERE tokens IS DISTINCT FROM step * 2048"
    ) == [(0,)]


def nanogpt_wandb_logs(max_iters: int = 2000, eval_interval: int = 250) -> list[dict]:
    """nanoGPT's ``wandb.log`` at each evaluation, iter 0 included (``mfu`` is -100 until
    it is first measured)."""
    return [
        {
            "iter": it,
            "lr": 6e-4,
            "mfu": -100.0 if it == 0 else 31.5,
            "train/loss": loss_curve(it, 8.5e7, TOKENS_PER_ITER),
            "val/loss": loss_curve(it, 8.5e7, TOKENS_PER_ITER) + 0.02,
        }
        for it in range(0, max_iters + 1, eval_interval)
    ]


def test_a_wandb_history_export_of_a_nanogpt_run(tmp_path: Path, db_path: Path) -> None:
    """nanoGPT logs its iteration as `iter`: that is the step (W&B's `_step` counts the
    evaluations), and tokens are iter x tokens per iteration, 0 at iter 0."""
    folder = tmp_path / "shakespeare-char"
    write_history_csv(folder / "history.csv", nanogpt_wandb_logs())
    (folder / "run.json").write_text(
        json.dumps({"n_layer": 12, "n_embd": 768, "schedule": "cosine"})
    )
    code, out = ingest(db_path, str(folder), "--tokens-per-step", str(TOKENS_PER_ITER))
    assert code == 0, out
    no_quarantine(db_path)
    got = rows(db_path, "SELECT metric, step, tokens FROM observations ORDER BY metric, step")
    iters = range(0, 2001, 250)
    assert got == [("train_loss", i, i * float(TOKENS_PER_ITER)) for i in iters] + [
        ("val_loss", i, i * float(TOKENS_PER_ITER)) for i in iters
    ]
    assert rows(db_path, "SELECT params_method, schedule, tokens_per_step FROM runs") == [
        ("config_12ld2", "cosine", float(TOKENS_PER_ITER))
    ]


# ---------------------------------------------------------------- nanoGPT-style JSON Lines


def write_nanogpt_jsonl(path: Path, *, max_iters: int, eval_interval: int, log_interval: int):
    """A nanoGPT ``train.py`` that writes what it prints as JSON Lines: an evaluation line
    (``train_loss``, ``val_loss``) every ``eval_interval`` iterations from iter 0, and the
    iteration's loss every ``log_interval``."""
    lines = []
    for it in range(0, max_iters + 1):
        if it % eval_interval == 0:
            loss = loss_curve(it, 8.5e7, TOKENS_PER_ITER)
            lines.append({"iter": it, "train_loss": loss, "val_loss": loss + 0.02, "lr": 6e-4})
        if it % log_interval == 0:
            lines.append(
                {"iter": it, "loss": loss_curve(it, 8.5e7, TOKENS_PER_ITER) + 0.1, "mfu": 30.0}
            )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return path


def test_nanogpt_jsonl_sweep_with_per_run_schedules(tmp_path: Path, db_path: Path) -> None:
    sweep = tmp_path / "sweep"
    for name in ("small", "medium"):
        write_nanogpt_jsonl(
            sweep / name / "log.jsonl", max_iters=600, eval_interval=200, log_interval=100
        )
    (sweep / "small" / "run.json").write_text(json.dumps({"params": "85M"}))
    (sweep / "medium" / "run.json").write_text(
        json.dumps({"params": "350M", "runs": {"medium": {"schedule": "constant"}}})
    )
    args = ["--tokens-per-step", "491.52K", "--schedule", "cosine", "--project", "sweep"]
    code, out = ingest(db_path, str(sweep), *args)
    assert code == 0, out
    no_quarantine(db_path)
    assert rows(db_path, "SELECT run_id, params, schedule, project FROM runs ORDER BY 1") == [
        ("medium", 3.5e8, "constant", "sweep"),
        ("small", 8.5e7, "cosine", "sweep"),
    ]
    got = rows(
        db_path,
        "SELECT metric, list(step ORDER BY step), bool_and(tokens = step * ?) FROM observations "
        "WHERE run_id = 'small' GROUP BY 1 ORDER BY 1",
        [TOKENS_PER_ITER],
    )
    assert got == [
        ("loss", list(range(0, 601, 100)), True),
        ("train_loss", [0, 200, 400, 600], True),
        ("val_loss", [0, 200, 400, 600], True),
    ]


def test_an_older_trainer_wandb_export_with_its_summary_row(tmp_path: Path, db_path: Path) -> None:
    """Before transformers#29612 the run-average `train/train_loss` (with `train_runtime`,
    `total_flos`...) was logged to the history at the last step: it is no measurement and is
    left out. A row a user's callback logged without `train/global_step` turns that column
    into floats (`10.0`) in the export, which still reads as step 10."""
    logged = [
        *hf_wandb_logs(steps=100, eval_every=50),
        {
            "train/global_step": 100,
            "train/total_flos": 1.2e15,
            "train/train_loss": 4.9,
            "train/train_runtime": 61.0,
            "train/train_samples_per_second": 13.1,
        },
        {"custom/throughput": 812.5},
    ]
    path = write_history_csv(tmp_path / "old-hf.csv", logged)
    assert ",10.0," in path.read_text()  # the float steps the test is about
    code, out = ingest(db_path, str(path), "--params", "20M")
    assert code == 0, out
    no_quarantine(db_path)
    metrics = rows(db_path, "SELECT metric, count(*) FROM observations GROUP BY 1 ORDER BY 1")
    assert metrics == [("eval_loss", 2), ("train_loss", 10)]
    assert rows(
        db_path, "SELECT value FROM observations WHERE metric = 'train_loss' AND step = 100"
    ) == [(loss_curve(100, 2e7, 2048),)]
    source = readers.open_source(path, "wandb", run_id="old-hf")
    assert "train/train_loss" in source.ignored and "train_train_loss" not in source.metrics


def test_a_log_without_a_step_says_every_row_was_rejected(tmp_path: Path, db_path: Path) -> None:
    log = tmp_path / "log.jsonl"
    log.write_text('{"it": 0, "loss": 3.0}\n{"it": 1, "loss": 2.5}\n')
    code, out = ingest(db_path, str(log), "--params", "1M")
    assert code == 2, out
    assert rows(db_path, "SELECT reason FROM quarantine") == [("`step` is missing",)] * 2
    note = rows(db_path, "SELECT message FROM ingests")[0][0]
    assert "every row rejected" in note and "no data rows" not in note


def test_the_schedule_is_checked(tmp_path: Path, db_path: Path) -> None:
    """A schedule outside the vocabulary in run.json rejects the run's rows, saying why; on
    the command line it is a usage error."""
    folder = tmp_path / "r"
    write_nanogpt_jsonl(folder / "log.jsonl", max_iters=10, eval_interval=5, log_interval=5)
    (folder / "run.json").write_text(json.dumps({"params": 1e6, "schedule": "linear"}))
    code, out = ingest(db_path, str(folder))
    assert code == 2, out
    reasons = {r for (r,) in rows(db_path, "SELECT reason FROM quarantine")}
    assert len(reasons) == 1 and "schedule" in reasons.pop()
    code, out = ingest(db_path, str(folder), "--schedule", "linear")
    assert code == 2 and "--schedule" in out


# ---------------------------------------------------------------- where tokens come from


def test_token_sources_in_their_order(tmp_path: Path, db_path: Path) -> None:
    """`tokens`, else step x tokens_per_step, else HF's `num_input_tokens_seen`, row by row
    (scalefit.load.log_rows.TOKEN_SOURCES)."""
    folder = tmp_path / "mixed"
    folder.mkdir()
    (folder / "log.csv").write_text(
        "run_id,step,tokens,num_input_tokens_seen,loss\n"
        "given,0,0,0,9.0\n"
        "given,10,777,500,4.0\n"  # a tokens column wins over both
        "given,20,,1000,3.5\n"  # ...and where it is empty, step x 40 wins over the counter
        "counted,0,,0,9.0\n"
        "counted,10,,500,4.0\n"  # no tokens_per_step: the counter
        "bare,10,,,4.0\n"  # nothing: no tokens
    )
    (folder / "run.json").write_text(
        json.dumps({"params": 1e6, "runs": {"given": {"tokens_per_step": 40}}})
    )
    code, out = ingest(db_path, str(folder))
    assert code == 0, out  # the bare run is stored, with a warning
    assert "run `bare` has no token information" in out.replace("\n", " ")
    assert rows(db_path, "SELECT run_id, step, tokens FROM observations ORDER BY 1, 2") == [
        ("bare", 10, None),
        ("counted", 0, 0.0),
        ("counted", 10, 500.0),
        ("given", 0, 0.0),
        ("given", 10, 777.0),
        ("given", 20, 800.0),
    ]
    assert rows(db_path, "SELECT run_id, tokens FROM runs ORDER BY 1") == [
        ("bare", None),
        ("counted", 500.0),
        ("given", 800.0),
    ]


def test_a_declared_tokens_per_step_wins_over_the_trainer_counter(
    tmp_path: Path, db_path: Path
) -> None:
    """HF counts every input id, padding included: a declared tokens per step is preferred."""
    write_trainer_state(tmp_path / "padded")
    code, out = ingest(db_path, str(tmp_path / "padded"), "--tokens-per-step", "3000")
    assert code == 0, out
    assert rows(db_path, "SELECT count(*), bool_and(tokens = step * 3000) FROM observations") == [
        (13, True)
    ]
