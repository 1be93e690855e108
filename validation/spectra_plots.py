"""Figures of ``geomem spectra``: Jacobian spectra coloured by subspace, retained dimension.

Spectra are sorted (descending), so a curve is a rank, not a direction; :func:`rank_bands`
assigns each rank to the subspace whose band it occupies (normal directions on top, then the
tangent subspaces in increasing order of variance), and the curves take that subspace's
colour. The layout (2 x 2 panels, one shared legend below) reads at page width.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from ..theory.manifold import LinearManifold
from ..theory.schedules import Schedule
from ._common import pyplot

__all__ = ["rank_bands", "spectra_figures"]

_SUBSPACE_COLORS = ("tab:red", "tab:blue", "tab:green", "tab:purple", "tab:orange")
#: colour of the rank band of the normal (off-manifold) directions
_NORMAL_COLOR = "0.55"


def rank_bands(model: LinearManifold) -> list[tuple[int | None, slice]]:
    """Which ranks of a descending spectrum belong to which subspace (None: normal).

    ``Delta * sigma`` of a direction of variance v is ``Delta / (Delta + a^2 v)``: largest for
    the normal directions, then the tangent subspaces in increasing order of variance. So the
    top ``d - sum(dims)`` ranks are the normal band and the subspace with the largest std
    holds the last ranks.
    """
    n_normal = model.d - sum(model.dims)
    bands: list[tuple[int | None, slice]] = [(None, slice(0, n_normal))]
    start = n_normal
    for k in sorted(range(model.n_subspaces), key=lambda k: model.stds[k]):
        bands.append((k, slice(start, start + model.dims[k])))
        start += model.dims[k]
    return bands


def spectra_figures(res: dict, model: LinearManifold, ts: np.ndarray, n_train: int,
                    schedule: Schedule, sources: Sequence[str], titles: Mapping[str, str]):
    """The spectra figure (2 x 2 panels: published theory, REM, origin and fresh-point MC;
    curves coloured by subspace rank band, one legend) and the retained-dimension figure."""
    plt = pyplot()
    delta = schedule.delta(ts)
    panels = tuple(sources)[:4]  # the mean Jacobian appears in the retained-dimension figure
    fig, axes = plt.subplots(2, 2, figsize=(10, 7.4), sharex=True, sharey=True,
                             constrained_layout=True)
    bands = rank_bands(model)
    for ax, source in zip(axes.ravel(), panels, strict=True):
        vals = delta[:, None] * res["curves"][source]
        for k, ranks in bands:
            color = _NORMAL_COLOR if k is None else _SUBSPACE_COLORS[k % 5]
            if ranks.stop > ranks.start:
                ax.plot(ts, vals[:, ranks], color=color, lw=1.0 if k is None else 1.4)
        notes = []
        for k, tl in enumerate(res["gap_loss"][source]):
            if np.isfinite(tl):
                ax.axvline(tl, color=_SUBSPACE_COLORS[k % 5], ls="--", lw=1.2)
                notes.append(f"subspace {k + 1} gap lost at t={tl:.2g}")
            elif np.all(np.isnan(res["curves"][source])):
                notes = ["no theory for this schedule"]
            else:
                notes.append(f"subspace {k + 1} gap never lost in range")
        ax.text(0.02, 0.03, "\n".join(dict.fromkeys(notes)), transform=ax.transAxes,
                fontsize=8, va="bottom", bbox={"facecolor": "white", "alpha": 0.8, "lw": 0})
        ax.set_xscale("log")
        ax.set_title(titles[source], fontsize=10)
    for ax in axes[-1]:
        ax.set_xlabel(f"t ({schedule.name})")
    for ax in axes[:, 0]:
        ax.set_ylabel("Delta(t) * singular value")
    axes[0, 0].set_ylim(0, 1.6)
    handles = [plt.Line2D([], [], color=_NORMAL_COLOR, lw=1.0,
                          label=f"normal directions ({model.d - sum(model.dims)} ranks)")]
    handles += [plt.Line2D([], [], color=_SUBSPACE_COLORS[k % 5], lw=1.4,
                           label=f"subspace {k + 1}: m={model.dims[k]}, std {model.stds[k]:g}")
                for k in range(model.n_subspaces)]
    handles.append(plt.Line2D([], [], color="k", ls="--", lw=1.2,
                              label="gap lost (half the subspace's dimensions)"))
    fig.legend(handles=handles, loc="outside lower center", ncol=2, fontsize=9, frameon=False)
    fig.suptitle(f"Empirical-score Jacobian spectra, d={model.d}, N={n_train}"
                 f"{', normalised samples' if model.normalized else ''}; curves coloured by "
                 "the subspace whose rank band they occupy", fontsize=10)
    fig2, axes2 = plt.subplots(1, model.n_subspaces, figsize=(5 * model.n_subspaces, 3.6),
                               constrained_layout=True)
    styles = {"published": "k--", "rem": "k-", "origin": "o-", "fresh": "s-",
              "fresh_mean": "^-"}
    for k, ax in enumerate(np.atleast_1d(axes2)):
        for source in sources:
            ax.plot(ts, res["retained"][source][:, k], styles[source], ms=3,
                    label=titles[source])
        ax.set_xscale("log")
        ax.set_ylim(-0.2, model.dims[k] + 0.2)
        ax.set_title(f"subspace {k + 1}: m={model.dims[k]}, std {model.stds[k]:g}", fontsize=9)
        ax.set_xlabel(f"t ({schedule.name})")
        ax.set_ylabel("retained dimension")
    np.atleast_1d(axes2)[0].legend(fontsize=7)
    fig2.suptitle(f"Retained dimension per subspace (gap criterion), N={n_train}", fontsize=9)
    return fig, fig2
