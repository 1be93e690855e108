"""phase_diagram: shapes, definitions, consistency of grid classification and boundaries."""

from __future__ import annotations

import json

import numpy as np
import pytest

# H1a's theory/population.py and theory/published.py are prerequisites of the REM modules
pytest.importorskip("geomem.theory.population")
pytest.importorskip("geomem.theory.published")

from geomem.theory import VE, VP, GeometricVE, LinearManifold
from geomem.theory.phase import PhaseDiagram, phase_diagram
from geomem.theory.published import direction_condensation_times
from geomem.theory.rem import annealed_freezing_parameter, collapse_time
from geomem.validation.records import to_jsonable

FIG4 = LinearManifold.figure4(theory=True)
N_VALUES = np.geomspace(3, 1e6, 9)
T_VALUES = np.geomspace(1e-5, 1, 41)


@pytest.mark.parametrize("method", ["paper", "rem"])
def test_shapes_ranges_and_read_only(method):
    pd = phase_diagram(FIG4, N_VALUES, T_VALUES, VE(), method)
    assert pd.condensed.shape == pd.retained_fraction.shape == (9, 41, 2)
    assert pd.condensed.dtype == bool and pd.globally_condensed.shape == (9, 41)
    assert pd.subspace_boundary.shape == (9, 2) and pd.global_boundary.shape == (9,)
    assert np.all((pd.retained_fraction >= 0) & (pd.retained_fraction <= 1))
    assert np.all(np.isfinite(pd.collapse_time))
    with pytest.raises(ValueError):
        pd.retained_fraction[0, 0, 0] = 0.5
    rows = pd.to_rows()
    assert len(rows) == 9 * 41 * 2
    assert set(rows[0]) == {"N", "t", "subspace", "method", "condensed", "retained_fraction"}
    # large t: nothing lost; small t, small N: something lost
    assert not pd.condensed[:, -1].any() and pd.globally_condensed[0, 0]


def test_rem_definitions():
    pd = phase_diagram(FIG4, N_VALUES, T_VALUES, VP(), "rem")
    lam = annealed_freezing_parameter(FIG4, T_VALUES[None, :], N_VALUES[:, None], VP())
    np.testing.assert_allclose(pd.freezing_parameter, lam)
    np.testing.assert_array_equal(pd.globally_condensed, lam < 1)
    t_c = collapse_time(FIG4, N_VALUES, VP())
    np.testing.assert_allclose(pd.global_boundary, t_c)
    np.testing.assert_array_equal(pd.globally_condensed, T_VALUES[None, :] < t_c[:, None])
    # retained = lam (1 + r)/(1 + lam r); lost iff < 1/2
    a2, delta = VP().a(T_VALUES) ** 2, VP().delta(T_VALUES)
    r = (a2 / delta)[None, :, None] * pd.subspace_variances
    want = lam[..., None] * (1 + r) / (1 + lam[..., None] * r)
    np.testing.assert_allclose(pd.retained_fraction, want, rtol=1e-12)
    np.testing.assert_array_equal(pd.condensed, want < 0.5)
    # the smaller-variance subspace keeps the smaller fraction of its gap
    assert np.all(pd.retained_fraction[..., 1] <= pd.retained_fraction[..., 0] + 1e-12)
    # log scale: ln(1 + lam r) / ln(1 + r), same ordering, never above the linear fraction
    log = phase_diagram(FIG4, N_VALUES, T_VALUES, VP(), "rem", gap="log")
    want_log = np.log1p(lam[..., None] * r) / np.log1p(r)
    np.testing.assert_allclose(log.retained_fraction, want_log, rtol=1e-12)
    np.testing.assert_array_equal(log.condensed, want_log < 0.5)
    assert np.all(log.retained_fraction[..., 1] <= log.retained_fraction[..., 0] + 1e-12)
    assert np.all(log.retained_fraction <= pd.retained_fraction + 1e-12)
    assert log.condensed.sum() > pd.condensed.sum()


@pytest.mark.parametrize("gap", ["linear", "log"])
def test_rem_subspace_boundary_is_largest_lost_time(gap):
    n_values = np.array([2.0, 3.0, 5.0, 8.0, 30.0, 1e4, 1e9])
    dense_t = np.geomspace(1e-9, 10, 600)
    pd = phase_diagram(FIG4, n_values, dense_t, VE(), "rem", gap=gap)
    boundary = pd.subspace_boundary
    if gap == "linear":  # the linear gap is lost only at small N
        assert np.any(np.isfinite(boundary)) and np.any(np.isnan(boundary))
    else:  # the log gap is lost at every N, the smaller-variance subspace first
        assert np.all(np.isfinite(boundary))
        assert np.all(boundary[:, 1] > boundary[:, 0])
    for i in range(n_values.size):
        for k in range(2):
            lost_t = dense_t[pd.condensed[i, :, k]]
            if np.isnan(boundary[i, k]):
                assert lost_t.size == 0
            else:
                assert lost_t.size > 0
                # grid points above the boundary are kept, the largest lost point is just below
                assert lost_t.max() <= boundary[i, k] * (1 + 1e-9)
                assert lost_t.max() > boundary[i, k] / (dense_t[1] / dense_t[0]) ** 1.01


def test_paper_definitions():
    pd = phase_diagram(FIG4, N_VALUES, T_VALUES, VE(), "paper")
    times = np.asarray(direction_condensation_times(FIG4, N_VALUES))
    assert pd.freezing_parameter is None
    np.testing.assert_allclose(pd.subspace_boundary[:, 0], times[:, 0])
    np.testing.assert_allclose(pd.subspace_boundary[:, 1], times[:, 2])
    np.testing.assert_array_equal(pd.condensed,
                                  T_VALUES[None, :, None] < pd.subspace_boundary[:, None, :])
    np.testing.assert_array_equal(pd.globally_condensed, pd.condensed.any(-1))
    # published theory (normalised data): the higher-variance subspace is lost first
    assert np.all(pd.subspace_boundary[:, 0] > pd.subspace_boundary[:, 1])


def test_round_trip_through_json():
    for method, gap in (("paper", "log"), ("rem", "linear")):
        pd = phase_diagram(FIG4, N_VALUES[:3], T_VALUES[::10], VE(), method, gap=gap)
        back = PhaseDiagram.from_dict(json.loads(json.dumps(to_jsonable(pd.to_dict()))))
        for name, value in pd.__dict__.items():
            if isinstance(value, np.ndarray):
                np.testing.assert_array_equal(getattr(back, name), value)
            else:
                assert getattr(back, name) == value


def test_bounded_schedule_nan_outside_domain():
    pd = phase_diagram(FIG4, [10.0, 1e12], [0.1, 0.5, 1.0], GeometricVE(), "rem")
    assert np.isnan(pd.collapse_time[1])  # t_C < 0 in the geometric-VE parametrisation
    assert np.isfinite(pd.collapse_time[0])


def test_bad_inputs():
    with pytest.raises(ValueError, match="method"):
        phase_diagram(FIG4, N_VALUES, T_VALUES, VE(), "population")
    with pytest.raises(ValueError, match="gap"):
        phase_diagram(FIG4, N_VALUES, T_VALUES, VE(), "rem", gap="relative")
    with pytest.raises(ValueError, match="schedule must be VE"):
        phase_diagram(FIG4, N_VALUES, T_VALUES, VP(), "paper")
    with pytest.raises(ValueError, match="n_train"):
        phase_diagram(FIG4, [1.0, 10.0], T_VALUES, VE(), "rem")
    with pytest.raises(ValueError, match="t_values"):
        phase_diagram(FIG4, N_VALUES, [0.0, 1.0], VE(), "rem")
    with pytest.raises(ValueError, match="n_train_values"):
        phase_diagram(FIG4, [[10.0]], T_VALUES, VE(), "rem")
    with pytest.raises(ValueError, match="model"):
        phase_diagram(None, N_VALUES, T_VALUES, VE(), "rem")


# ----------------------------------------------------------------------------- issue 15, item 16
def test_paper_retained_fraction_from_single_directions():
    """Independent route for "paper": in the figure-4 model every direction of a subspace has
    the same std, so its value is that of any one direction (paper_singular_values unsorted),
    and sigma_inf = 1/(t + s^2). Kills s instead of s^2 and 1.05 x min instead of the mean."""
    from geomem.theory import paper_singular_values

    n_values, t_values = np.array([50.0, 1e4]), np.array([0.004, 0.03, 0.2])
    pd = phase_diagram(FIG4, n_values, t_values, VE(), "paper")
    values = paper_singular_values(FIG4, t_values[None, :], n_values[:, None], VE(), sort=False)
    for k, std in enumerate(FIG4.stds):
        first = int(np.flatnonzero(FIG4.direction_subspace == k)[0])
        sigma = values[..., first]
        want = (1 / t_values - sigma) / (1 / t_values - 1 / (t_values + std**2))
        np.testing.assert_allclose(pd.retained_fraction[..., k], np.clip(want, 0, 1),
                                   rtol=1e-12, atol=1e-15)
    # N -> infinity: the paper's spectrum is 1/(t + s^2), so every gap is fully retained
    huge = phase_diagram(FIG4, [1e300], t_values, VE(), "paper")
    np.testing.assert_allclose(huge.retained_fraction, 1.0, rtol=1e-12)
