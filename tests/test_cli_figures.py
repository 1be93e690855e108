"""Figures a researcher reads at a glance: spectra coloured by subspace with a legend at page
width; generalization sample rows as a grid; no legend entries for series without data."""

import sys

import matplotlib
import numpy as np
import pytest

matplotlib.use("Agg")
from matplotlib.colors import to_rgba  # noqa: E402

from geomem.theory.manifold import LinearManifold  # noqa: E402
from geomem.theory.schedules import VE  # noqa: E402
from geomem.validation.spectra_plots import rank_bands, spectra_figures  # noqa: E402

SOURCES = ("published", "rem", "origin", "fresh", "fresh_mean")


def test_rank_bands_of_figure4():
    model = LinearManifold.figure4()  # dims (2, 5), stds (1, 0.3), d = 30
    assert rank_bands(model) == [(None, slice(0, 23)), (1, slice(23, 28)), (0, slice(28, 30))]


def test_spectra_figure_colours_subspaces_with_a_legend():
    model = LinearManifold.figure4()
    ts = np.geomspace(1e-3, 1, 6)
    rng = np.random.default_rng(0)
    curves = {s: np.sort(rng.random((ts.size, model.d)), axis=1)[:, ::-1] for s in SOURCES}
    res = {"curves": curves, "gap_loss": {s: [0.1, float("inf")] for s in SOURCES},
           "retained": {s: np.ones((ts.size, 2)) for s in SOURCES}}
    fig, fig2 = spectra_figures(res, model, ts, 100, VE(), SOURCES,
                                {s: s for s in SOURCES})
    width, height = fig.get_size_inches()
    assert width <= 11 and width / height <= 1.6  # page width, not a 4:1 strip
    colours = {}
    for line in fig.axes[0].get_lines():
        if len(line.get_xdata()) == ts.size:  # spectrum curves (not the vertical markers)
            key = to_rgba(line.get_color())
            colours[key] = colours.get(key, 0) + 1
    assert colours == {to_rgba("0.55"): 23, to_rgba("tab:blue"): 5, to_rgba("tab:red"): 2}
    labels = [t.get_text() for legend in fig.legends for t in legend.get_texts()]
    assert any("subspace 1: m=2" in t for t in labels)
    assert any("subspace 2: m=5" in t for t in labels)
    assert any("normal directions" in t for t in labels)
    assert min(t.get_fontsize() for legend in fig.legends for t in legend.get_texts()) >= 8
    import matplotlib.pyplot as plt

    plt.close(fig)
    plt.close(fig2)


def test_skdim_not_imported_below_min_points(monkeypatch):
    from geomem.validation.image_dimensions import SKDIM_MIN_POINTS, skdim_estimates

    monkeypatch.setitem(sys.modules, "skdim", None)  # any import of skdim now fails
    out = skdim_estimates(np.zeros((SKDIM_MIN_POINTS - 1, 1, 4, 4)))
    assert out and all(np.isnan(v) for v in out.values())
    with pytest.raises(ImportError):
        skdim_estimates(np.random.default_rng(0).random((SKDIM_MIN_POINTS, 1, 4, 4)))


def test_image_dimensions_legend_lists_only_series_with_data():
    from geomem.validation import image_dimensions

    captured = {}

    class Run:
        def save_figure(self, fig, stem):
            captured["labels"] = [t.get_text() for ax in fig.axes if ax.get_legend()
                                  for t in ax.get_legend().get_texts()]
            captured["texts"] = [ax.get_title() for ax in fig.axes]

    rows = [{"dataset": "disks", "N": n, "sigma": s, "point": 0, "gap_dimension": float("nan"),
             "shrinkage_dimension": 3, "trace_jacobian": 1.0}
            for n in (1, 10) for s in (0.1, 0.2)]
    sk_rows = [{"dataset": "disks", "N": n, **{k: float("nan") for k in
                                               image_dimensions.SKDIM_ESTIMATORS}}
               for n in (1, 10)]
    spectra = {("disks", n, s): np.ones((1, 16)) for n in (1, 10) for s in (0.1, 0.2)}
    image_dimensions._plot(Run(), rows, sk_rows, spectra, ["disks"], [0.1, 0.2])
    assert not any("skdim" in t or t.startswith("gap") for t in captured["labels"])
    assert any(t.startswith("shrinkage") for t in captured["labels"])
    note = "\n".join(captured["texts"])
    assert "skdim (needs N >= 25)" in note and "gap, sigma=0.1 (no spectral cliff found)" in note
