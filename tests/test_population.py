"""Population spectrum, effective variances, Marchenko–Pastur law and the bulk-gap time."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import integrate, optimize

from geomem.theory import DDPM, VE, VP, GeometricVE, LinearManifold
from geomem.theory.population import (
    bulk_gap_value,
    effective_direction_variances,
    largest_gap_time,
    marchenko_pastur_density,
    marchenko_pastur_edges,
    population_singular_values,
)

# float64 symmetric eigenvalues of d <= 8 matrices: ~1e-14 relative to the largest
EIG_RTOL = 1e-10
# bounded scalar maximisation (xatol 1e-12 on log t): the argmax is flat, so ~1e-5 relative
ARGMAX_RTOL = 1e-5
# MP density vs eigenvalues of one 400 x 1600 sample: KS distance of order 1/sqrt(400) at worst
MP_KS_TOL = 0.03

SCHEDULES = [VE(), VP(), DDPM(), GeometricVE()]


@st.composite
def models(draw, normalized=None):
    d = draw(st.integers(2, 8))
    k = draw(st.integers(1, min(3, d)))
    dims = draw(st.lists(st.integers(1, 2), min_size=k, max_size=k).filter(lambda x: sum(x) <= d))
    stds = draw(st.lists(st.floats(0.05, 3.0), min_size=k, max_size=k))
    norm = draw(st.booleans()) if normalized is None else normalized
    return LinearManifold(d, dims, stds=stds, residual_std=draw(st.sampled_from([0.0, 0.01])),
                          normalized=norm, basis="random", seed=draw(st.integers(0, 1000)))


@pytest.mark.parametrize("schedule", SCHEDULES, ids=lambda s: s.name)
@given(model=models(), u=st.floats(0.01, 1.0))
@settings(max_examples=15, deadline=None)
def test_equals_eigenvalues_of_population_jacobian(schedule, model, u):
    t = u * min(schedule.t_max, 5.0)
    a, delta = float(schedule.a(t)), float(schedule.delta(t))
    cov = (model.basis * effective_direction_variances(model)) @ model.basis.T
    noised_cov = delta * np.eye(model.d) + a**2 * cov
    # J = -noised_cov^{-1}: compare reciprocals with the (well-conditioned) eigenvalues of
    # noised_cov, whose absolute error is ~eps * its largest eigenvalue
    eig = np.linalg.eigvalsh(noised_cov)
    got = population_singular_values(model, t, schedule)
    np.testing.assert_allclose(1.0 / got, eig, rtol=EIG_RTOL, atol=EIG_RTOL * eig.max())
    # ... and the explicit inverse agrees up to its condition number
    expected = np.sort(np.abs(np.linalg.eigvalsh(-np.linalg.inv(noised_cov))))[::-1]
    np.testing.assert_allclose(got, expected, rtol=EIG_RTOL * eig.max() / eig.min())


@given(model=models(), t=st.lists(st.floats(1e-4, 10.0), min_size=1, max_size=6))
@settings(max_examples=25, deadline=None)
def test_shape_sorted_and_bounded_by_one_over_delta(model, t):
    t = np.asarray(t).reshape(-1, 1, 1)[: len(t)]
    sv = population_singular_values(model, t, VP())
    assert sv.shape == t.shape + (model.d,)
    assert np.all(np.diff(sv, axis=-1) <= 0)
    inv_delta = 1.0 / VP().delta(t)[..., None]
    assert np.all(sv <= inv_delta * (1 + 1e-12)) and np.all(sv > 0)
    unsorted = population_singular_values(model, t, VP(), sort=False)
    np.testing.assert_array_equal(np.sort(unsorted, axis=-1)[..., ::-1], sv)


@given(model=models())
@settings(max_examples=15, deadline=None)
def test_large_t_limit_is_one_over_delta(model):
    t = 1e9  # VE: a^2 v / Delta <= 9e-9
    sv = population_singular_values(model, t, VE())
    np.testing.assert_allclose(sv * t, 1.0, rtol=1e-8)


#: Monte-Carlo tolerance in standard errors of the per-direction sample means (30 directions,
#: seeded: a 4-sigma excursion has probability ~6e-5 per direction)
MC_Z_MAX = 4.0
#: the closed forms below vs the quadrature of normalized_direction_variances (epsrel 1e-11)
SPECIAL_CASE_RTOL = 1e-8


def test_effective_variances_unnormalised_are_generator_variances():
    plain = LinearManifold(6, (2, 3), stds=(1.0, 0.3), residual_std=0.01)
    np.testing.assert_allclose(effective_direction_variances(plain),
                               [1.0, 1.0, 0.09, 0.09, 0.09, 1e-4], rtol=1e-15)


def test_effective_variances_normalised_against_monte_carlo():
    """Independent route: E[y_i^2] of y = s z/|s z| by seeded Monte Carlo (figure-4 model),
    every direction within MC_Z_MAX standard errors. Kills ignoring normalisation (s^2),
    s -> s^2 in the integrand, the exponent -1/2 -> -1 and a dropped 1/(1 + 2 u s_i^2)."""
    normed = LinearManifold.figure4()
    v = effective_direction_variances(normed)
    y = normed.sample(100_000, np.random.default_rng(2))
    sq = y**2
    se = sq.std(axis=0, ddof=1) / np.sqrt(len(sq))
    z = np.abs(sq.mean(axis=0) - v) / se
    assert np.all(z < MC_Z_MAX), z
    # the normalised samples have unit norm, so the second moments sum to one
    assert v.sum() == pytest.approx(1.0, rel=1e-9)
    assert v[0] > v[2] > v[-1] > 0


def _exp_ratio_mean(c):
    """E[c X/(c X + Y)] for independent X, Y ~ Exp(1): X/Y has density 1/(1 + q)^2, so this
    is int_0^inf c q/((c q + 1)(1 + q)^2) dq, by adaptive quadrature."""
    return integrate.quad(lambda q: c * q / ((c * q + 1.0) * (1.0 + q) ** 2), 0.0, np.inf,
                          epsabs=0.0, epsrel=1e-12, limit=200)[0]


@pytest.mark.parametrize("stds", [(1.0, 0.3), (2.0, 0.05), (0.7, 0.7)])
def test_effective_variances_normalised_special_cases(stds):
    """Closed forms by other routes: (i) d = 2, one direction per std: y_1^2 =
    s1^2 cos^2 / (s1^2 cos^2 + s2^2 sin^2) with a uniform angle, whose mean is s1/(s1 + s2);
    (ii) d = 4, two 2-d subspaces: s_k^2 |z_k|^2 are independent exponentials (means 2 s_k^2),
    so E[y_i^2] = E[c X/(c X + Y)]/2 with c = s1^2/s2^2, by a 1-d quadrature; (iii) isotropic
    d = 5: 1/d."""
    s1, s2 = stds
    two = effective_direction_variances(LinearManifold(2, (1, 1), stds=stds, normalized=True))
    np.testing.assert_allclose(two, [s1 / (s1 + s2), s2 / (s1 + s2)], rtol=SPECIAL_CASE_RTOL)
    four = effective_direction_variances(LinearManifold(4, (2, 2), stds=stds, normalized=True))
    first = _exp_ratio_mean(s1**2 / s2**2) / 2
    np.testing.assert_allclose(four, [first, first, 0.5 - first, 0.5 - first],
                               rtol=SPECIAL_CASE_RTOL)
    iso = effective_direction_variances(LinearManifold(5, (5,), stds=s1, normalized=True))
    np.testing.assert_allclose(iso, 0.2, rtol=SPECIAL_CASE_RTOL)


def test_bad_input():
    model = LinearManifold(4, (2,), stds=1.0)
    with pytest.raises(ValueError, match="t out of range"):
        population_singular_values(model, 0.0, VE())
    with pytest.raises(ValueError, match="t out of range"):
        population_singular_values(model, [0.5, -1.0], VP())
    with pytest.raises(ValueError, match="model"):
        population_singular_values("figure4", 1.0, VE())
    with pytest.raises(ValueError, match="schedule"):
        population_singular_values(model, 1.0, "nope")
    with pytest.raises(ValueError, match="ratio"):
        marchenko_pastur_edges(0.0)
    with pytest.raises(ValueError, match="scale"):
        marchenko_pastur_density(1.0, 0.5, scale=-1.0)
    with pytest.raises(ValueError, match="upper_edge must exceed"):
        largest_gap_time(2.0, 1.0)
    with pytest.raises(ValueError, match="lower_edge"):
        largest_gap_time(0.0, 1.0)


# ----------------------------------------------------------------------------- MP and the gap
@given(lo=st.floats(1e-3, 10.0), factor=st.floats(1.01, 1e3))
@settings(max_examples=40, deadline=None)
def test_largest_gap_time_maximises_the_gap(lo, factor):
    hi = lo * factor
    t_star = float(largest_gap_time(lo, hi))
    assert t_star == pytest.approx(np.sqrt(lo * hi), rel=1e-12)
    res = optimize.minimize_scalar(lambda r: -bulk_gap_value(np.exp(r), lo, hi),
                                   bounds=(np.log(lo) - 5, np.log(hi) + 5), method="bounded",
                                   options={"xatol": 1e-12})
    assert np.exp(res.x) == pytest.approx(t_star, rel=ARGMAX_RTOL)
    # the VE gap in closed form: t/(t+lo) - t/(t+hi)
    t = np.geomspace(lo / 10, hi * 10, 7)
    np.testing.assert_allclose(bulk_gap_value(t, lo, hi), t / (t + lo) - t / (t + hi), rtol=1e-12)
    peak = (np.sqrt(hi) - np.sqrt(lo)) / (np.sqrt(hi) + np.sqrt(lo))
    assert float(bulk_gap_value(t_star, lo, hi)) == pytest.approx(peak, rel=1e-12)


@given(lo=st.floats(1e-2, 1.0), factor=st.floats(1.5, 100.0))
@settings(max_examples=10, deadline=None)
def test_largest_gap_time_other_schedules_same_snr(lo, factor):
    hi = lo * factor
    t_vp = float(largest_gap_time(lo, hi, VP()))
    assert float(VP().snr(t_vp)) == pytest.approx(1.0 / np.sqrt(lo * hi), rel=1e-10)
    grid = np.linspace(t_vp * 0.5, t_vp * 1.5, 2001)
    assert np.all(bulk_gap_value(grid, lo, hi, VP()) <= bulk_gap_value(t_vp, lo, hi, VP()) + 1e-15)


# 0 < |ratio - 1| < 0.02 puts the lower edge within ~1e-4 of the 1/x pole, where quad (not the
# density) loses ~1e-6 of the mass; ratio = 1 itself (edge at the pole) is smooth again
@given(ratio=st.floats(0.05, 20.0).filter(lambda r: abs(r - 1) > 0.02) | st.just(1.0),
       scale=st.floats(0.1, 5.0))
@settings(max_examples=20, deadline=None)
def test_mp_density_mass_and_mean(ratio, scale):
    lo, hi = marchenko_pastur_edges(ratio, scale)
    half = (hi - lo) / 2

    def moment(k):
        # x = lo + half (1 - cos th) removes the square-root edges (and the 1/sqrt(x) blow-up
        # near ratio = 1), leaving a smooth integrand on [0, pi]
        def integrand(th):
            x = lo + 2 * half * np.sin(th / 2) ** 2  # = lo + half (1 - cos th), no cancellation
            return x**k * marchenko_pastur_density(x, ratio, scale) * half * np.sin(th)
        return integrate.quad(integrand, 0.0, np.pi, limit=200)[0]

    assert moment(0) == pytest.approx(min(1.0, 1.0 / ratio), rel=1e-6)
    # E[lambda] = scale: the atom at 0 carries no first moment
    assert moment(1) == pytest.approx(scale, rel=1e-6)
    assert marchenko_pastur_density(lo * 0.5, ratio, scale) == 0.0
    assert marchenko_pastur_density(hi * 1.5, ratio, scale) == 0.0


@pytest.mark.parametrize("ratio", [0.25, 0.5])
def test_mp_density_matches_sampled_spectrum(ratio):
    rng = np.random.default_rng(7)
    p, scale = 400, 2.0
    n = int(p / ratio)
    f = rng.normal(scale=np.sqrt(scale), size=(p, n))
    eig = np.linalg.eigvalsh(f @ f.T / n)
    lo, hi = marchenko_pastur_edges(ratio, scale)
    assert eig.min() == pytest.approx(lo, rel=0.1) and eig.max() == pytest.approx(hi, rel=0.05)
    grid = np.linspace(lo, hi, 4001)
    cdf = integrate.cumulative_trapezoid(marchenko_pastur_density(grid, ratio, scale), grid,
                                         initial=0.0)
    empirical = np.searchsorted(np.sort(eig), grid, side="right") / p
    assert np.max(np.abs(cdf - empirical)) < MP_KS_TOL


def test_two_bulk_population_gap_is_largest_at_predicted_time():
    """Population spectrum of two MP bulks: the rescaled gap peaks at sqrt(a b) under VE."""
    rng = np.random.default_rng(3)
    lo_bulk = np.linalg.eigvalsh(np.cov(rng.normal(size=(40, 400)), bias=True) * 0.1)
    hi_bulk = np.linalg.eigvalsh(np.cov(rng.normal(size=(40, 400)), bias=True) * 4.0)
    a_edge, b_edge = lo_bulk.max(), hi_bulk.min()
    t = np.geomspace(a_edge / 30, b_edge * 30, 4001)
    scaled = t[:, None] / (t[:, None] + np.concatenate([lo_bulk, hi_bulk]))  # t * 1/(t + v)
    gap = scaled[:, :40].min(axis=1) - scaled[:, 40:].max(axis=1)
    t_best = t[np.argmax(gap)]
    assert t_best == pytest.approx(float(largest_gap_time(a_edge, b_edge)), rel=5e-3)
