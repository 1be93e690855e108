"""The Wiener (best linear) denoiser: exact posterior mean on Gaussian data."""

import numpy as np
import pytest
import torch

from geomem.numerics.linear_denoiser import WienerDenoiser


def _gaussian(d=6, seed=0):
    rng = np.random.default_rng(seed)
    a = rng.standard_normal((d, d))
    return rng.standard_normal(d), a @ a.T / d + 0.05 * np.eye(d), rng


def _tweedie_posterior_mean(y, sigma, mean, cov):
    """E[x|y] = y + sigma^2 grad log p_sigma(y), p_sigma = N(mean, cov + sigma^2 I), by autograd."""
    dist = torch.distributions.MultivariateNormal(
        torch.as_tensor(mean), covariance_matrix=torch.as_tensor(cov) + sigma ** 2 * torch.eye(
            len(mean), dtype=torch.float64))
    yt = torch.as_tensor(y).requires_grad_(True)
    (grad,) = torch.autograd.grad(dist.log_prob(yt).sum(), yt)
    return (yt + sigma ** 2 * grad).detach().numpy()


@pytest.mark.parametrize("sigma", [0.01, 0.3, 2.0])
def test_wiener_equals_exact_gaussian_posterior_mean(sigma):
    mean, cov, rng = _gaussian()
    den = WienerDenoiser.from_moments(mean, cov)
    y = rng.multivariate_normal(mean, cov, 5) + sigma * rng.standard_normal((5, len(mean)))
    np.testing.assert_allclose(den(y, sigma), _tweedie_posterior_mean(y, sigma, mean, cov),
                               rtol=1e-10, atol=1e-10)


def test_fitted_wiener_converges_to_posterior_mean_and_predicts_its_mse():
    mean, cov, rng = _gaussian(seed=1)
    x = rng.multivariate_normal(mean, cov, 40_000)
    fitted = WienerDenoiser(x.reshape(-1, 1, 2, 3))                # image-shaped input
    sigma = 0.5
    clean = rng.multivariate_normal(mean, cov, 4000)
    y = clean + sigma * rng.standard_normal(clean.shape)
    exact = _tweedie_posterior_mean(y, sigma, mean, cov)
    out = fitted(y.reshape(-1, 1, 2, 3), sigma).reshape(y.shape)
    assert np.max(np.abs(out - exact)) < 0.05
    mse = np.mean((out - clean) ** 2)
    assert mse == pytest.approx(fitted.expected_mse(sigma), rel=0.05)
    assert mse < sigma ** 2                                         # beats the identity
    # per-image sigma and the sigma -> 0 limit (identity on the data's span)
    np.testing.assert_allclose(fitted(y[:3], [0.0, 0.0, 0.0]), y[:3], atol=1e-12)
    assert np.all((fitted.shrinkage(sigma) >= 0) & (fitted.shrinkage(sigma) <= 1))


def test_wiener_rejects_bad_input():
    with pytest.raises(ValueError, match="finite"):
        WienerDenoiser(np.full((3, 4), np.nan))
    with pytest.raises(ValueError, match="symmetric"):
        WienerDenoiser.from_moments(np.zeros(2), np.array([[1.0, 1.0], [0.0, 1.0]]))
    with pytest.raises(ValueError, match="sigma"):
        WienerDenoiser(np.eye(3))(np.zeros((1, 3)), -1.0)


#: gradient of the exact expected loss at the claimed optimum (float64 rounding of a d = 6 solve)
OPTIMUM_GRAD_ATOL = 1e-10


@pytest.mark.parametrize("sigma", [0.05, 0.5, 2.0])
def test_linear_wiener_is_the_best_linear_map(sigma):
    """affine=False: a linear map (D(0) = 0, D(a y) = a D(y)) whose matrix zeroes the gradient
    (by autograd) of the exact expected loss over the training set and the noise,
    L(W) = E_x,z |W (x + sigma z) - x|^2 = tr(W (M + sigma^2 I) W^T) - 2 tr(W M) + tr M with
    M = E[x x^T] -- an independent route to M (M + sigma^2 I)^{-1}; it loses to the affine
    Wiener on data with a mean, and equals it on centred data."""
    rng = np.random.default_rng(3)
    x = rng.standard_normal((200, 6)) @ rng.standard_normal((6, 6)) + 2.0
    lin = WienerDenoiser(x, affine=False)
    w = lin(np.eye(6), sigma).T                                     # D(y) = W y, columns
    np.testing.assert_allclose(lin(np.zeros((1, 6)), sigma), 0.0, atol=1e-15)
    y = rng.standard_normal((4, 6))
    np.testing.assert_allclose(lin(3.0 * y, sigma), 3.0 * lin(y, sigma), rtol=1e-12)
    m = torch.as_tensor(x.T @ x / len(x))
    wt = torch.as_tensor(w).requires_grad_(True)
    loss = (torch.trace(wt @ (m + sigma ** 2 * torch.eye(6, dtype=torch.float64)) @ wt.T)
            - 2 * torch.trace(wt @ m) + torch.trace(m))
    (grad,) = torch.autograd.grad(loss, wt)
    assert float(grad.abs().max()) < OPTIMUM_GRAD_ATOL
    assert lin.expected_mse(sigma) > WienerDenoiser(x).expected_mse(sigma)
    centred = x - x.mean(0)
    np.testing.assert_allclose(WienerDenoiser(centred, affine=False)(y, sigma),
                               WienerDenoiser(centred)(y, sigma), atol=1e-12)
