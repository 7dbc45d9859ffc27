"""Write sweep.csv and run.json: the README's example sweep (python docs/examples/make_sweep.py).

18 runs (6 sizes x 3 token budgets, 4 evaluations each) whose eval loss follows Besiroglu et
al.'s Chinchilla law, L = E + A/N^alpha + B/D^beta, times log-normal noise of 0.5%.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

LAW = {"E": 1.8172, "A": 482.01, "B": 2085.43, "alpha": 0.3478, "beta": 0.3658}
SIZES = (20e6, 40e6, 80e6, 160e6, 320e6, 640e6)
TOKENS_PER_PARAM = (10, 20, 40)
TOKENS_PER_STEP = 2**19
NOISE = 0.005


def main(here: Path = Path(__file__).resolve().parent) -> None:
    rng = np.random.default_rng(13)
    rows = ["run_id,step,tokens,eval_loss"]
    runs = {}
    for n in SIZES:
        for multiple in TOKENS_PER_PARAM:
            run = f"n{int(n / 1e6)}m-d{multiple}x"
            runs[run] = {"params": int(n)}
            steps = round(n * multiple / TOKENS_PER_STEP)
            for k in range(1, 5):
                step = round(steps * k / 4)
                tokens = step * TOKENS_PER_STEP
                clean = LAW["E"] + LAW["A"] / n ** LAW["alpha"] + LAW["B"] / tokens ** LAW["beta"]
                rows.append(f"{run},{step},{tokens},{clean * np.exp(rng.normal(0, NOISE)):.4f}")
    (here / "sweep.csv").write_text("\n".join(rows) + "\n")
    (here / "run.json").write_text(json.dumps({"project": "sweep", "runs": runs}, indent=1) + "\n")


if __name__ == "__main__":
    main()
