"""Every plot, rendered from a small real store: the curated data, an ingested IsoFLOP sweep
fitted by approach 3 and approach 2 (with bootstrap), and one study-style reproduction."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from scalefit import pipeline, plots, report, store
from scalefit.laws import chinchilla_allocation, chinchilla_loss

TRUE = {"E": 1.82, "A": 482.0, "B": 2085.0, "alpha": 0.348, "beta": 0.366}
BUDGETS = (3e17, 1e18, 3e18, 1e19)
SIZE_FACTORS = (0.25, 0.4, 0.63, 1.0, 1.6, 2.5, 4.0)


def write_sweep(path: Path, seed: int = 0) -> Path:
    """An IsoFLOP design of a known law: 7 sizes around the optimum at each of 4 budgets,
    one final observation per run, 0.3% noise."""
    rng = np.random.default_rng(seed)
    rows = []
    for c in BUDGETS:
        n_opt, _ = chinchilla_allocation(c, TRUE["A"], TRUE["B"], TRUE["alpha"], TRUE["beta"])
        for k, f in enumerate(SIZE_FACTORS):
            n = float(n_opt) * f
            d = c / (6 * n)
            loss = float(chinchilla_loss(n, d, **TRUE)) * np.exp(rng.normal(0, 0.003))
            rows.append(
                {"run_id": f"c{c:.0e}_n{k}", "step": 100, "tokens": d, "loss": loss, "params": n}
            )
    pl.DataFrame(rows).write_csv(path)
    return path


def build_store(root: Path) -> Path:
    """The curated data plus the sweep, fitted two ways with a bootstrap."""
    from scalefit.load import logs as ingest

    db = root / "scalefit.duckdb"
    pipeline.load_curated(db)
    ingest.ingest_paths(db, [write_sweep(root / "sweep.csv")], project="sweep")
    for law, n_bootstrap in (("chinchilla", 20), ("isoflop", 100)):
        info = pipeline.fit_project(db, "sweep", law, n_bootstrap=n_bootstrap, seed=0)
        assert info.status == "fitted", info
    pipeline.refresh_comparisons(db)
    return db


@pytest.fixture(scope="module")
def reports(tmp_path_factory) -> tuple[Path, report.ReportInfo]:
    root = tmp_path_factory.mktemp("plots")
    db = build_store(root)
    info = pipeline.write_reports(db, root / "reports")
    return db, info


def png_size(path: Path) -> tuple[int, int]:
    """Width and height of a PNG from its header (checks the signature and IHDR chunk)."""
    head = path.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n", f"{path.name} is not a PNG"
    assert head[12:16] == b"IHDR"
    return struct.unpack(">II", head[16:24])


def test_every_plot_is_written_as_a_real_png(reports) -> None:
    _, info = reports
    pngs = {name for name in info.files if name.endswith(".png")}
    assert pngs == {
        "tokens_vs_params.png",
        "law_fit_fitted_sweep_chinchilla.png",
        "law_fit_fitted_sweep_isoflop.png",
        "bootstrap_fitted_sweep_chinchilla.png",
        "bootstrap_fitted_sweep_isoflop.png",
    }
    for name in pngs:
        path = info.directory / name
        width, height = png_size(path)
        assert 600 <= width <= 3000 and 350 <= height <= 2500, (name, width, height)
        assert path.stat().st_size == info.files[name] > 20_000


def test_tokens_vs_params_labels_do_not_overlap_and_caveats_show(reports) -> None:
    db, _ = reports
    with store.connect(db, read_only=True) as con:
        models = store.query(con, report.REPORT_QUERIES["models"])
        laws = store.query(con, "SELECT law_id, form, parameters FROM laws")
        from scalefit import compare

        frontier = compare.frontier(laws)
        bands = report._frontier_bands(con, frontier)
        caveats = report._caveats(con)
    assert set(bands) == {"fitted_sweep_chinchilla", "fitted_sweep_isoflop"}
    for band in bands.values():
        assert (band["params_low"] < band["params_high"]).all()
    assert "hoffmann2022_approach3" in caveats
    fig = plots.tokens_vs_params_figure(models, frontier, bands=bands, caveats=caveats)
    ax = fig.axes[0]
    renderer = fig.canvas.get_renderer()
    labels = [t for t in ax.texts if t.get_text() and "FLOPs" not in t.get_text()]
    assert len(labels) == models.height
    for family, model in models.select("family", "model").iter_rows():
        # every model labelled, with its family where its name alone would not say it
        assert {model, f"{family} {model}"} & {t.get_text() for t in labels}, model
    assert "Gopher 7.1B" in {t.get_text() for t in labels}
    boxes = [t.get_window_extent(renderer) for t in labels]
    frame = ax.get_window_extent(renderer)
    for i, a in enumerate(boxes):
        assert frame.x0 <= a.x0 and a.x1 <= frame.x1 and frame.y0 <= a.y0 and a.y1 <= frame.y1
        for j in range(i):
            assert not a.overlaps(boxes[j]), (labels[i].get_text(), labels[j].get_text())
    # one colour per law, and the caveat both marked in the legend and written out
    legend_texts = [t.get_text() for lg in [*fig.legends, ax.get_legend()] for t in lg.texts]
    assert any(t.startswith("hoffmann2022_approach3 †") for t in legend_texts)
    footnote = " ".join(t.get_text() for t in fig.texts)
    assert "† hoffmann2022_approach3: Printed constants" in footnote.replace("\n", " ")
    law_ids = set(frontier["law_id"].to_list())
    colours = [line.get_color() for line in ax.lines if line.get_label().split()[0] in law_ids]
    assert len(colours) == len(law_ids) == len(set(colours))
    # legends sit outside the axes, never over the data
    frame = ax.get_window_extent(renderer)
    for legend in [*fig.legends, ax.get_legend()]:
        assert not legend.get_window_extent(renderer).overlaps(frame)
    import matplotlib.pyplot as plt

    plt.close(fig)


def test_place_labels_separates_a_tight_cluster() -> None:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 4))
    ax.set(xscale="log", yscale="log", xlim=(1e8, 1e12), ylim=(1e10, 1e13))
    x = [8e9, 8.03e9, 8.1e9, 7e9, 1e10, 9e9] * 2
    y = [15e12 / 2, 15e12 / 2, 2e12, 2.1e12, 1.5e12, 1.8e12] * 2
    names = [f"Model {i} long name" for i in range(len(x))]
    texts = plots.place_labels(ax, x, y, names)
    boxes = [t.get_window_extent(fig.canvas.get_renderer()) for t in texts]
    assert len(boxes) == len(names)
    overlaps = [(i, j) for i in range(len(boxes)) for j in range(i) if boxes[i].overlaps(boxes[j])]
    assert overlaps == []
    plt.close(fig)


def test_fit_plots_draw_the_datas_own_budgets(tmp_path: Path) -> None:
    frame = pl.read_csv(write_sweep(tmp_path / "s.csv"))
    kind, groups = plots.fit_slices(frame)
    assert kind == "flops" and groups.max() + 1 == len(BUDGETS)
    per_tokens = frame.with_columns(tokens=1e9 * (pl.int_range(pl.len()) % 3 + 1))
    kind, groups = plots.fit_slices(per_tokens)
    assert kind == "tokens" and groups.max() + 1 == 3


def test_isoflop_profiles_find_the_laws_optimum_within_their_interval(tmp_path: Path) -> None:
    frame = pl.read_csv(write_sweep(tmp_path / "s.csv"))
    profiles = plots.isoflop_profiles(frame)
    assert profiles.height == len(BUDGETS)
    n_true, _ = chinchilla_allocation(
        profiles["flops"].to_numpy(), TRUE["A"], TRUE["B"], TRUE["alpha"], TRUE["beta"]
    )
    # a parabola in ln N approximates the true profile: its optimum is close, not exact
    assert np.allclose(profiles["params_opt"], n_true, rtol=0.15)
    assert (profiles["params_low"] <= profiles["params_opt"]).all()
    assert (profiles["params_opt"] <= profiles["params_high"]).all()


def test_observed_vs_predicted_plot(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    observed = rng.uniform(2.2, 3.5, 40)
    frame = pl.DataFrame(
        {
            "dataset": ["c4"] * 20 + ["rpj"] * 20,
            "observed": observed,
            "predicted": observed * np.exp(rng.normal(0, 0.01, 40)),
            "held_out": [i % 10 == 0 for i in range(40)],
            "fitted": [i % 10 in (1, 2, 3) for i in range(40)],
        }
    )
    path = tmp_path / "reproduction.png"
    plots.plot_observed_vs_predicted(frame, "study: observed vs predicted loss", path)
    width, height = png_size(path)
    assert width > 600 and height > 600 and path.stat().st_size > 20_000


def test_isoflop_plot_draws_the_fits_own_parabolas(reports) -> None:
    import json

    db, _ = reports
    with store.connect(db, read_only=True) as con:
        row = store.query(
            con, "SELECT fit_id, input, diagnostics FROM fits WHERE procedure = 'isoflop'"
        )
        points = report._fit_points(con, row["fit_id"][0], row["input"][0])
    budgets = json.loads(row["diagnostics"][0])["budgets"]
    profiles = plots.isoflop_profiles(points)
    assert profiles["params_opt"].to_list() == pytest.approx(
        [b["params_opt"] for b in budgets], rel=1e-9
    )
    assert profiles["loss_min"].to_list() == pytest.approx([b["loss_min"] for b in budgets])


def test_envelope_and_scattered_fit_plots(tmp_path: Path) -> None:
    """The procedures the small store does not fit: an envelope fit (loss curves), and a
    parametric fit to scattered (N, D) drawn at each point's own (N, D), with a caveat."""
    from scalefit.fit import fit_envelope
    from scalefit.laws import ChinchillaLaw

    rows = [
        {"run_id": f"n{n:.1e}", "params": n, "tokens": d, "loss": chinchilla_loss(n, d, **TRUE)}
        # curves long enough that the envelope has interior minima once each run's smoothed
        # curve is trimmed to the middle of its FLOP span (as tests/test_fit.py's curves)
        for n in np.geomspace(3e7, 3e9, 12)
        for d in np.geomspace(1e8, 3e11, 30)
    ]
    curves = pl.DataFrame(rows)
    env = fit_envelope(curves, n_bootstrap=10)
    plots.plot_envelope_fit(
        curves, env.law, tmp_path / "env.png", title="envelope", sample_laws=env.sample_laws()
    )
    rng = np.random.default_rng(0)
    n = 10 ** rng.uniform(7, 9.5, 40)
    d = n * 10 ** rng.uniform(0.5, 2.5, 40)
    scattered = pl.DataFrame({"params": n, "tokens": d, "loss": chinchilla_loss(n, d, **TRUE)})
    assert plots.fit_slices(scattered)[0] == "bins"
    law = ChinchillaLaw(**TRUE)
    # resamples all above the estimate: a percentile interval need not contain the point
    # estimate (seen on a study's refit), and the plot must draw it, not fail
    samples = [ChinchillaLaw(**{**TRUE, "E": TRUE["E"] * (1 + e)}) for e in (0.01, 0.02, 0.03)]
    plots.plot_parametric_fit(
        scattered,
        law,
        tmp_path / "fit.png",
        title="scattered",
        sample_laws=samples,
        caveat="a caveat",
    )
    for name in ("env.png", "fit.png"):
        width, height = png_size(tmp_path / name)
        assert width > 600 and height > 400 and (tmp_path / name).stat().st_size > 20_000
