"""Analytic denoisers: each against an independent route (brute-force loops, the empirical score,
the mixture's closed-form score, autodiff), their limits and their symmetries."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from geomem.numerics import _patch_posterior
from geomem.numerics.analytic_denoisers import (
    AnalyticDenoiser,
    EmpiricalPosteriorMean,
    EquivariantPatchPosteriorMean,
    GaussianPosteriorMean,
    MaskedPosteriorMean,
    WienerMaskedPosteriorMean,
    square_patch_masks,
    wiener_locality_masks,
)
from geomem.numerics.empirical import empirical_score
from geomem.theory import GaussianMixture

#: float64 sums of at most a few hundred terms of size O(10): rounding stays far below this
EXACT = 1e-10
#: the smallest budget allowed (1 MiB): forces many chunks, so the streaming sum is exercised
SMALL_MEMORY = 2**20
#: closed-form against autodiff Jacobians: entries O(1 / sigma^2), sums of a few hundred terms
JACOBIAN = 1e-9


def _data(n=7, c=1, h=5, w=5, b=3, sigma=0.7, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, c, h, w))
    y = x[rng.integers(0, n, b)] + sigma * rng.standard_normal((b, c, h, w))
    return x, y


def _softmax_mean(logits, values):
    w = np.exp(logits - logits.max())
    return (w / w.sum()) @ values


def _brute_local(x, y, sigma, masks):
    """Pixel by pixel, image by image: the masked posterior mean as defined."""
    xf, yf = x.reshape(len(x), -1), y.reshape(len(y), -1)
    out = np.empty_like(yf)
    for b in range(len(yf)):
        for i in range(xf.shape[1]):
            m = masks[i].astype(bool)
            logits = -((yf[b, m] - xf[:, m]) ** 2).sum(1) / (2 * sigma ** 2)
            out[b, i] = _softmax_mean(logits, xf[:, i])
    return out.reshape(y.shape)


def _brute_els(x, y, sigma, p):
    """Every training patch at every position, periodic boundary, by index arithmetic."""
    n, c, h, w = x.shape
    r = p // 2
    offsets = [(a, b) for a in range(-r, r + 1) for b in range(-r, r + 1)]

    def patch(img, i, j):
        return np.stack([img[:, (i + a) % h, (j + b) % w] for a, b in offsets], 1).ravel()

    bank = np.stack([patch(x[k], i, j) for k in range(n) for i in range(h) for j in range(w)])
    centres = np.stack([x[k, :, i, j] for k in range(n) for i in range(h) for j in range(w)])
    out = np.empty_like(y)
    for b in range(len(y)):
        for i in range(h):
            for j in range(w):
                logits = -((patch(y[b], i, j) - bank) ** 2).sum(1) / (2 * sigma ** 2)
                out[b, :, i, j] = _softmax_mean(logits, centres)
    return out


@pytest.mark.parametrize("memory", [SMALL_MEMORY, 2**28])
def test_empirical_equals_tweedie_of_the_empirical_score(memory):
    x, y = _data(n=300, c=2, h=4, w=4, b=5, sigma=0.4)
    den = EmpiricalPosteriorMean(x, memory_bytes=memory)
    score = empirical_score(y.reshape(5, -1), x.reshape(300, -1), a=1.0, delta=0.4 ** 2)
    np.testing.assert_allclose(den(y, 0.4), y + 0.4 ** 2 * score.reshape(y.shape),
                               rtol=EXACT, atol=EXACT)


def test_empirical_chunked_equals_unchunked_and_takes_per_image_sigma():
    x, y = _data(n=10_000, h=6, w=6, b=4)
    sigma = np.array([0.05, 0.3, 1.0, 4.0])
    whole = EmpiricalPosteriorMean(x, memory_bytes=2**30)(y, sigma)
    chunked = EmpiricalPosteriorMean(x, memory_bytes=SMALL_MEMORY)
    assert chunked._chunk(len(y) + chunked.d) < 5000                # really in several chunks
    np.testing.assert_allclose(chunked(y, sigma), whole, rtol=EXACT, atol=EXACT)
    for b in range(4):
        np.testing.assert_allclose(whole[b], chunked(y[b:b + 1], sigma[b])[0], rtol=EXACT,
                                   atol=EXACT)


def test_empirical_limits_nearest_image_and_mean():
    x, y = _data(n=20, b=6, sigma=0.05, seed=3)
    den = EmpiricalPosteriorMean(x)
    nearest = x[np.argmin(((y[:, None] - x[None]) ** 2).sum((2, 3, 4)), 1)]
    np.testing.assert_allclose(den(y, 1e-3), nearest, atol=1e-12)
    np.testing.assert_allclose(den(y, 1e4), np.broadcast_to(x.mean(0), y.shape), atol=1e-6)


@pytest.mark.parametrize("sigma", [0.05, 0.5, 3.0])
def test_gaussian_equals_tweedie_of_the_mixture_score(sigma):
    rng = np.random.default_rng(1)
    x = rng.standard_normal((50, 1, 3, 3)) @ np.diag([1.0, 2.0, 0.5]) + 0.3
    flat = x.reshape(50, -1)
    mean, cov = flat.mean(0), np.cov(flat.T, bias=True)
    y = rng.standard_normal((4, 1, 3, 3))
    noisy_model = GaussianMixture(mean[None], (cov + sigma ** 2 * np.eye(9))[None])
    expected = y.reshape(4, -1) + sigma ** 2 * noisy_model.score(y.reshape(4, -1))
    got = GaussianPosteriorMean(x)(y, sigma)
    np.testing.assert_allclose(got.reshape(4, -1), expected, rtol=1e-9, atol=1e-9)


def test_low_rank_gaussian_projects_on_the_leading_components():
    rng = np.random.default_rng(2)
    x = rng.standard_normal((200, 1, 4, 4)) * np.linspace(3, 0.1, 16).reshape(1, 1, 4, 4)
    full, low = GaussianPosteriorMean(x), GaussianPosteriorMean(x, rank=3)
    y = rng.standard_normal((5, 1, 4, 4))
    lo = low(y, 0.2).reshape(5, -1) - low.mean.numpy()
    basis = full.basis.numpy()[:, -3:]
    np.testing.assert_allclose(lo, lo @ basis @ basis.T, atol=1e-10)  # in the top-3 span
    # on the top-3 span the two models shrink alike
    np.testing.assert_allclose(lo @ basis, (full(y, 0.2).reshape(5, -1) - full.mean.numpy())
                               @ basis, atol=1e-10)
    assert GaussianPosteriorMean(x, rank=16)(y, 0.2) == pytest.approx(full(y, 0.2), abs=1e-12)


@given(seed=st.integers(0, 2**16), p=st.sampled_from([1, 3, 5]),
       boundary=st.sampled_from(["circular", "truncate"]), sigma=st.floats(0.1, 3.0))
@settings(max_examples=15, deadline=None)
def test_masked_equals_brute_force(seed, p, boundary, sigma):
    x, y = _data(n=6, c=2, h=4, w=5, b=2, sigma=sigma, seed=seed)
    masks = square_patch_masks((2, 4, 5), p, boundary)
    got = MaskedPosteriorMean(x, masks, memory_bytes=SMALL_MEMORY)(y, sigma)
    np.testing.assert_allclose(got, _brute_local(x, y, sigma, masks), rtol=EXACT, atol=EXACT)


@pytest.mark.parametrize(("p", "boundary"), [(5, "circular"), (9, "truncate")])
def test_whole_image_patch_is_the_empirical_posterior_mean(p, boundary):
    x, y = _data(n=30, c=1, h=5, w=5, b=4)
    masks = square_patch_masks((1, 5, 5), p, boundary)
    assert masks.all()
    np.testing.assert_allclose(MaskedPosteriorMean(x, masks)(y, 0.6),
                               EmpiricalPosteriorMean(x)(y, 0.6), rtol=EXACT, atol=EXACT)


def test_one_pixel_patch_is_the_per_pixel_posterior_mean():
    """P = 1: every pixel is denoised on its own, from the training set's values there."""
    x, y = _data(n=10, h=3, w=3, b=2)
    got = MaskedPosteriorMean(x, square_patch_masks((1, 3, 3), 1))(y, 0.5)
    xf, yf = x.reshape(10, -1), y.reshape(2, -1)
    for i in range(9):
        for b in range(2):
            logits = -(yf[b, i] - xf[:, i]) ** 2 / (2 * 0.25)
            assert got.reshape(2, -1)[b, i] == pytest.approx(_softmax_mean(logits, xf[:, i]),
                                                             abs=EXACT)


@given(seed=st.integers(0, 2**16), p=st.sampled_from([1, 3]), sigma=st.floats(0.2, 2.0))
@settings(max_examples=10, deadline=None)
def test_els_equals_brute_force(seed, p, sigma):
    x, y = _data(n=3, c=2, h=4, w=3, b=2, sigma=sigma, seed=seed)
    got = EquivariantPatchPosteriorMean(x, p, memory_bytes=SMALL_MEMORY)(y, sigma)
    np.testing.assert_allclose(got, _brute_els(x, y, sigma, p), rtol=EXACT, atol=EXACT)


@pytest.mark.parametrize("p, c, seed", [(1, 1, 0), (3, 2, 1), (5, 1, 2), (7, 2, 3)])
def test_els_fast_route_equals_the_differentiable_route(monkeypatch, p, c, seed):
    """The blocked kernel (used without gradients) against the streaming autodiff route, with
    blocks of 2 rows and 1 image so that every running-max rescaling is exercised; per-image
    sigma, and patches that wrap (P = 5, 7 on 5 x 4 images)."""
    monkeypatch.setattr(_patch_posterior, "ROW_BLOCK", 2)
    monkeypatch.setattr(_patch_posterior, "PATCH_BLOCK", 1)
    x, y = _data(n=4, c=c, h=5, w=4, b=3, seed=seed)
    sigma = np.array([0.3, 0.8, 1.5])
    den = EquivariantPatchPosteriorMean(x, p)
    y_t = torch.as_tensor(y).requires_grad_()
    with torch.enable_grad():
        reference = den._denoise(y_t, torch.as_tensor(sigma)).detach().numpy()
    np.testing.assert_allclose(den(y, sigma), reference, rtol=EXACT, atol=EXACT)


@pytest.mark.parametrize("p, c", [(3, 1), (3, 2), (7, 1)])
def test_els_closed_form_jacobian_equals_autodiff(p, c):
    # the posterior-covariance Jacobian against reverse-mode autodiff of the differentiable
    # route (AnalyticDenoiser.jacobian); P = 7 wraps onto itself on 5 x 5 images
    x, y = _data(n=4, c=c, h=5, w=5, b=2, seed=7)
    den = EquivariantPatchPosteriorMean(x, p)
    np.testing.assert_allclose(den.jacobian(y, 0.6).numpy(),
                               AnalyticDenoiser.jacobian(den, y, 0.6).numpy(),
                               rtol=JACOBIAN, atol=JACOBIAN)


def test_els_commutes_with_circular_shifts():
    x, y = _data(n=5, h=6, w=6, b=2, seed=4)
    den = EquivariantPatchPosteriorMean(x, 3)
    shifted = den(np.roll(y, (2, -1), axis=(2, 3)), 0.5)
    np.testing.assert_allclose(shifted, np.roll(den(y, 0.5), (2, -1), axis=(2, 3)),
                               rtol=EXACT, atol=EXACT)


@pytest.mark.parametrize("p", [5, 7])
def test_els_with_whole_image_patches_is_empirical_over_all_translations(p):
    """P >= the image (5 x 5; 7 wraps around more than once): every translate is a candidate."""
    x, y = _data(n=4, h=5, w=5, b=3)
    translates = np.concatenate([np.roll(x, (i, j), axis=(2, 3)) for i in range(5)
                                 for j in range(5)])
    expected = (EmpiricalPosteriorMean(translates)(y, 0.5) if p == 5 else
                _brute_els(x, y, 0.5, p))
    np.testing.assert_allclose(EquivariantPatchPosteriorMean(x, p)(y, 0.5), expected,
                               rtol=EXACT, atol=EXACT)


def test_wiener_masks_grow_with_sigma_and_contain_the_pixel():
    rng = np.random.default_rng(5)
    # stationary images with covariance exp(-distance / 1.5) on the 6 x 6 torus: a positive
    # spectrum, so W -> I (one-pixel masks) as sigma -> 0 and W ~ C / sigma^2 (wide) as it grows
    i, j = np.divmod(np.arange(36), 6)
    di, dj = np.abs(i[:, None] - i[None]), np.abs(j[:, None] - j[None])
    dist = np.hypot(np.minimum(di, 6 - di), np.minimum(dj, 6 - dj))
    x = rng.multivariate_normal(np.zeros(36), np.exp(-dist / 1.5), 2000).reshape(-1, 1, 6, 6)
    wiener = GaussianPosteriorMean(x)
    sizes = [wiener_locality_masks(wiener, s, 0.1).sum(1).mean() for s in (0.01, 1.0, 10.0)]
    assert sizes[0] == 1 and sizes[0] < sizes[1] <= sizes[2]
    masks = wiener_locality_masks(wiener, 1.0, 0.1)
    assert np.all(np.diagonal(masks) == 1)
    den = WienerMaskedPosteriorMean(x[:20], 0.1)
    y = x[:2] + 0.5 * rng.standard_normal((2, 1, 6, 6))
    m = wiener_locality_masks(den.wiener, 0.5, 0.1)
    np.testing.assert_allclose(den(y, 0.5), MaskedPosteriorMean(x[:20], m)(y, 0.5),
                               rtol=EXACT, atol=EXACT)
    both = den(np.concatenate([y, y]), np.array([0.5, 0.5, 2.0, 2.0]))
    np.testing.assert_allclose(both[2:], den(y, 2.0), rtol=EXACT, atol=EXACT)


@pytest.mark.parametrize("make", [
    lambda x: EmpiricalPosteriorMean(x),
    lambda x: GaussianPosteriorMean(x, rank=4),
    lambda x: MaskedPosteriorMean(x, square_patch_masks((1, 3, 3), 3, "truncate")),
    lambda x: EquivariantPatchPosteriorMean(x, 3),
])
def test_jacobian_matches_finite_differences_and_torch_in_torch_out(make):
    x, y = _data(n=8, h=3, w=3, b=1, seed=6)
    den = make(x)
    jac = den.jacobian(y, 0.6)[0].numpy()
    eps, fd = 1e-6, np.empty((9, 9))
    for j in range(9):
        e = np.zeros(9)
        e[j] = eps
        fd[:, j] = (den(y + e.reshape(y.shape), 0.6) - den(y - e.reshape(y.shape), 0.6)
                    ).ravel() / (2 * eps)
    np.testing.assert_allclose(jac, fd, atol=1e-6)    # central differences: O(eps^2) + rounding
    out = den(torch.as_tensor(y), torch.tensor(0.6))
    assert torch.is_tensor(out) and out.dtype == torch.float64


@pytest.mark.parametrize(("call", "name"), [
    (lambda x, y: EmpiricalPosteriorMean(x)(y, 0.0), "sigma"),
    (lambda x, y: EmpiricalPosteriorMean(x)(y, [0.1, 0.2]), "sigma"),
    (lambda x, y: EmpiricalPosteriorMean(x)(y[:, :, :2], 0.1), "y"),
    (lambda x, y: EmpiricalPosteriorMean(x)(y * np.nan, 0.1), "y"),
    (lambda x, y: EmpiricalPosteriorMean(x[0])(y, 0.1), "images"),
    (lambda x, y: EmpiricalPosteriorMean(x, memory_bytes=10), "memory_bytes"),
    (lambda x, y: GaussianPosteriorMean(x, rank=0), "rank"),
    (lambda x, y: MaskedPosteriorMean(x, np.ones((3, 3))), "masks"),
    (lambda x, y: MaskedPosteriorMean(x, np.zeros((25, 25))), "masks"),
    (lambda x, y: square_patch_masks((1, 5, 5), 4), "patch_size"),
    (lambda x, y: square_patch_masks((1, 5, 5), 3, "zeros"), "boundary"),
    (lambda x, y: EquivariantPatchPosteriorMean(x, 2), "patch_size"),
    (lambda x, y: WienerMaskedPosteriorMean(x, 0.0), "threshold"),
])
def test_bad_input_names_the_argument(call, name):
    x, y = _data(b=3)
    with pytest.raises(ValueError, match=name):
        call(x, y)
