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
