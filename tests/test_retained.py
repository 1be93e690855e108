"""One retained-dimension definition for every protocol (issue 17): brute-force checks of each
definition, origin path = exact path, population agreement, shared phase criterion, and
gap-loss statistics that are not grid-quantised."""

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

import geomem.theory.phase as phase
from geomem.numerics import retained as retained_module
from geomem.numerics.retained import (
    RETAINED_DEFINITIONS,
    estimator_retained_dimension,
    subspace_retained_dimension,
)
from geomem.theory import VE, LinearManifold
from geomem.validation._common import gap_loss_statistics, paired_log_ratio
from geomem.validation.measurements import (
    orthogonal_group_estimate,
    retained_grid,
)
from geomem.validation.measurements import (
    subspace_retained_dimension as measured,
)

#: float64 rounding of the different linear-algebra routes (eig vs svd vs eigh of J^T J) on
#: 8 x 8 matrices with entries O(1/Delta): far below any gap fraction difference that matters
ROUTE_RTOL = 1e-8
#: counts of a soft ("projection") definition are sums of squared projections: rounding only
COUNT_ATOL = 1e-9


def _model(d, dims, seed):
    # un-normalised, so the effective variance of subspace k is exactly stds[k]^2
    return LinearManifold(d, dims, stds=(1.0, 0.4)[:len(dims)], residual_std=0.01,
                          basis="random", seed=seed)


def _fraction(value, a, delta, v):
    return (1.0 - delta * value) / (1.0 - delta / (delta + a * a * v))


def _random_jacobian(rng, d, delta, symmetric=True):
    """J = Q diag(-u/Delta) Q^T with Delta*|eigenvalue| = u in [0, 1.3]: some directions keep
    their gap, some lose it; Q Haar, so J is dense (non-diagonal in every model basis)."""
    Q = stats.ortho_group.rvs(d, random_state=rng)
    u = rng.uniform(0.0, 1.3, d)
    J = (Q * (-u / delta)) @ Q.T
    if not symmetric:
        J = J + 0.2 / delta * rng.standard_normal((d, d))
    return J


def _brute_force(J, model, a, delta, definition, threshold=0.5):
    """Each definition computed by a different route, with explicit loops."""
    v = np.asarray(model.variances)
    out = np.zeros(model.n_subspaces)
    if definition == "projection":
        s2, V = np.linalg.eigh(J.T @ J)  # right singular vectors and squared singular values
        sv = np.sqrt(np.clip(s2, 0.0, None))
    for k in range(model.n_subspaces):
        U = model.subspace_basis(k)
        if definition == "restriction":
            values = np.sqrt(np.clip(np.linalg.eigvalsh(U.T @ J.T @ J @ U), 0.0, None))
            out[k] = sum(_fraction(s, a, delta, v[k]) >= threshold for s in values)
        elif definition == "compression":
            block = U.T @ J @ U
            values = np.abs(np.linalg.eigvals(0.5 * (block + block.T)).real)
            out[k] = sum(_fraction(s, a, delta, v[k]) >= threshold for s in values)
        else:
            for i in range(model.d):
                if _fraction(sv[i], a, delta, v[k]) >= threshold:
                    out[k] += sum(float(V[:, i] @ U[:, j]) ** 2 for j in range(U.shape[1]))
    return out


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), t=st.floats(0.01, 1.0),
       symmetric=st.booleans(), definition=st.sampled_from(RETAINED_DEFINITIONS))
def test_each_definition_equals_brute_force(seed, t, symmetric, definition):
    rng = np.random.default_rng(seed)
    model = _model(8, (2, 3), seed % 1000)
    a, delta = float(VE().a(t)), float(VE().delta(t))
    J = _random_jacobian(rng, 8, delta, symmetric)
    got = subspace_retained_dimension(J, model, a, delta, definition=definition)
    np.testing.assert_allclose(got, _brute_force(J, model, a, delta, definition),
                               atol=COUNT_ATOL)


def test_projection_matches_a_hard_assignment_when_directions_lie_in_subspaces():
    # the projection count is the soft version of assigning each singular vector to a slot:
    # for J whose singular vectors each lie in one subspace, enumerate all assignments
    rng = np.random.default_rng(3)
    model = _model(4, (1, 2), 7)
    a, delta = 1.0, 0.05
    lam = -rng.uniform(0.0, 1.3, 4) / delta
    J = (model.basis * lam) @ model.basis.T
    labels = list(model.direction_subspace)
    best, best_energy = None, -np.inf
    _, V = np.linalg.eigh(J)
    for perm in set(itertools.permutations(labels)):
        energy = sum(np.sum((V[:, i] @ model.subspace_basis(k)) ** 2)
                     for i, k in enumerate(perm))
        if energy > best_energy:
            best, best_energy = perm, energy
    w = np.linalg.eigvalsh(J)
    want = [sum(_fraction(abs(w[i]), a, delta, model.variances[k]) >= 0.5
                for i in range(4) if best[i] == k) for k in range(2)]
    np.testing.assert_allclose(subspace_retained_dimension(J, model, a, delta), want,
                               atol=COUNT_ATOL)


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), sigma=st.floats(0.01, 3.0),
       centring=st.sampled_from(["subtract", "symmetric"]))
def test_origin_path_equals_exact_path_for_a_linear_score_with_offset(seed, sigma, centring):
    rng = np.random.default_rng(seed)
    model = _model(8, (2, 3), 11)
    a, delta = 0.9, 0.04
    J = _random_jacobian(rng, 8, delta, symmetric=True)
    b = rng.standard_normal(8) / delta  # a mean score s(0) != 0, as for an empirical score
    S, Z = orthogonal_group_estimate(lambda X: X @ J.T + b, np.zeros(8), sigma, rng,
                                     centring=centring)
    np.testing.assert_allclose(S, Z @ J, rtol=ROUTE_RTOL, atol=ROUTE_RTOL / delta)
    for definition in RETAINED_DEFINITIONS:
        np.testing.assert_allclose(
            estimator_retained_dimension(S, Z, model, a, delta, definition=definition),
            subspace_retained_dimension(J, model, a, delta, definition=definition),
            atol=COUNT_ATOL)
    # uncentred rows carry the offset in every row: the estimate is not Z J
    S_raw, Z_raw = orthogonal_group_estimate(lambda X: X @ J.T + b, np.zeros(8), sigma, rng,
                                             centring="none")
    assert not np.allclose(Z_raw.T @ S_raw, J, rtol=1e-3)


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), t=st.floats(0.005, 1.0))
def test_all_definitions_agree_on_a_block_diagonal_jacobian(seed, t):
    rng = np.random.default_rng(seed)
    model = _model(8, (2, 3), seed % 997)
    a, delta = float(VE().a(t)), float(VE().delta(t))
    # population score: J = -(Delta I + a^2 Sigma)^-1, block-diagonal in the model basis
    population = -np.linalg.inv(delta * np.eye(8) + a * a * model.covariance())
    counts = [subspace_retained_dimension(population, model, a, delta, definition=name)
              for name in RETAINED_DEFINITIONS]
    for c in counts:
        np.testing.assert_allclose(c, model.dims, atol=COUNT_ATOL)
    # any block-diagonal J (blocks with arbitrary eigenvalues): all definitions agree with the
    # count of each block's own eigenvalues
    blocks, want = np.zeros((8, 8)), []
    start = 0
    for k, m in enumerate((*model.dims, 8 - model.m)):
        Q = stats.ortho_group.rvs(m, random_state=rng) if m > 1 else np.ones((1, 1))
        lam = -rng.uniform(0.0, 1.3, m) / delta
        blocks[start:start + m, start:start + m] = (Q * lam) @ Q.T
        if k < model.n_subspaces:
            want.append(sum(_fraction(abs(x), a, delta, model.variances[k]) >= 0.5
                            for x in lam))
        start += m
    J = model.basis @ blocks @ model.basis.T
    for name in RETAINED_DEFINITIONS:
        np.testing.assert_allclose(subspace_retained_dimension(J, model, a, delta,
                                                               definition=name),
                                   want, atol=COUNT_ATOL)


def test_measurement_and_phase_criterion_use_the_same_function(monkeypatch):
    assert measured is subspace_retained_dimension
    model = _model(8, (2, 3), 1)
    a, delta = 1.0, 0.1
    J = -np.linalg.inv(delta * np.eye(8) + a * a * model.covariance())
    before_phase = phase.phase_diagram(model, [1000.0], [0.1, 1.0], VE(), "rem")
    assert not before_phase.condensed.any()
    np.testing.assert_allclose(subspace_retained_dimension(J, model, a, delta), model.dims,
                               atol=COUNT_ATOL)
    calls = []

    def never_retained(fraction, threshold=phase.LOSS_FRACTION):
        calls.append(threshold)
        return np.zeros(np.shape(fraction), dtype=bool)

    monkeypatch.setattr(phase, "gap_retained", never_retained)
    after_phase = phase.phase_diagram(model, [1000.0], [0.1, 1.0], VE(), "rem")
    assert after_phase.condensed.all()  # the theory now loses everything ...
    for name in RETAINED_DEFINITIONS:  # ... and so does every measurement definition
        assert np.all(subspace_retained_dimension(J, model, a, delta, definition=name) == 0)
    assert len(calls) >= 1 + len(RETAINED_DEFINITIONS) * model.n_subspaces
    assert retained_module._phase is phase


@settings(max_examples=25, deadline=None)
@given(delta=st.floats(1e-4, 10.0), v=st.floats(1e-3, 10.0), a=st.floats(0.1, 1.0),
       lam=st.floats(1e-3, 1.0))
def test_gap_fraction_is_the_rem_retained_fraction(delta, v, a, lam):
    r = a * a * v / delta
    value = 1.0 / (delta + lam * a * a * v)
    assert np.isclose(phase.gap_fraction(value, a, delta, v), lam * (1 + r) / (1 + lam * r),
                      rtol=1e-6)  # rtol: 1 - Delta*value cancels to ~1e-10 at r ~ 1e-6


def test_threshold_vector_and_retained_grid_shapes():
    model = _model(8, (2, 3), 5)
    rng = np.random.default_rng(0)
    J = np.stack([_random_jacobian(rng, 8, 0.1) for _ in range(4)])
    many = subspace_retained_dimension(J, model, 1.0, 0.1, threshold=[0.2, 0.5, 0.9])
    assert many.shape == (4, 3, 2)
    np.testing.assert_array_equal(many[:, 1], subspace_retained_dimension(J, model, 1.0, 0.1))
    assert np.all(np.diff(many, axis=1) <= COUNT_ATOL)  # stricter threshold: fewer kept
    grid = retained_grid(J, model, 1.0, 0.1)
    assert grid.shape == (4, len(RETAINED_DEFINITIONS), 3, 2)
    with pytest.raises(ValueError, match="definition"):
        subspace_retained_dimension(J, model, 1.0, 0.1, definition="nearest")
    with pytest.raises(ValueError, match="shape"):
        subspace_retained_dimension(J[..., :3], model, 1.0, 0.1)


def test_gap_loss_statistics_resolve_below_the_grid_and_count_censored():
    t = np.geomspace(1e-3, 1.0, 13)  # factor 1.78 per step
    true = np.array([0.011, 0.013, 0.017, 0.019])  # replicate crossings, between grid points
    # curves linear in ln t: the log interpolation recovers each crossing exactly
    curves = [2.0 + 3.0 * (np.log(t) - np.log(c)) for c in true]
    curves.append(np.full(t.size, 5.0))  # never lost in range
    curves.append(np.full(t.size, 0.0))  # lost already at the largest t
    res = gap_loss_statistics(t, np.array(curves), 2.0)
    np.testing.assert_allclose(np.exp(res["log_crossings"][:4]), true, rtol=1e-12)
    assert np.isclose(res["t_loss"], np.exp(np.mean(np.log(true))))  # same statistic as CI
    assert res["n_replicates"] == 6 and res["n_crossed"] == 4
    assert res["n_not_lost"] == 1 and res["n_lost_at_start"] == 1
    assert res["ci_low"] < res["t_loss"] < res["ci_high"]
    half_step = np.sqrt(res["resolution"])
    assert res["ci_high"] / res["t_loss"] >= half_step * (1 - 1e-12)  # resolution floor
    identical = gap_loss_statistics(t, np.array(curves[:1] * 3), 2.0)
    assert identical["ci_high"] > identical["t_loss"] > identical["ci_low"]  # never 0-width
    pair = paired_log_ratio(np.log(true), np.log(true / 2), resolution=1.0)
    assert np.isclose(pair["ratio"], 2.0) and pair["n_paired"] == 4


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), t=st.floats(0.01, 1.0))
def test_restriction_never_retains_more_than_compression_for_symmetric_j(seed, t):
    # U^T J^2 U = B^2 + leakage >= B^2 (Loewner), so sigma_i(J U) >= |eig B|_(i) (docs §5d)
    rng = np.random.default_rng(seed)
    model = _model(8, (2, 3), seed % 991)
    a, delta = float(VE().a(t)), float(VE().delta(t))
    J = _random_jacobian(rng, 8, delta, symmetric=True)
    restriction = subspace_retained_dimension(J, model, a, delta, definition="restriction")
    compression = subspace_retained_dimension(J, model, a, delta, definition="compression")
    assert np.all(restriction <= compression)
