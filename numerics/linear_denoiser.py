"""The best linear (Wiener) denoiser of a training set: the reference a trained denoiser must beat.

For images x with mean mu and covariance C (estimated on a training set) and noisy observations
``y = x + sigma z``, the affine map minimising ``E||D(y) - x||^2`` is

    D_sigma(y) = mu + C (C + sigma^2 I)^{-1} (y - mu),

the posterior mean ``E[x | y]`` when x is Gaussian N(mu, C). It is *not* blind: it is told
sigma (an oracle advantage over the blind networks). With ``affine=False`` it is the best
*linear* map (no offset), ``M (M + sigma^2 I)^{-1} y`` with the second-moment matrix
``M = E[x x^T]``: the reference a bias-free network (``D(a y) = a D(y)``, so it cannot add
the mean image) competes with on equal terms. With ``C = U diag(c) U^T`` it shrinks
the k-th principal component by ``c_k / (c_k + sigma^2)``; on the fitted distribution its
per-pixel MSE is ``sum_k c_k sigma^2 / (c_k + sigma^2) / d``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["WienerDenoiser"]


class WienerDenoiser:
    """Wiener denoiser fitted on ``images`` (N, ...) (moments in float64, ``bias=True``
    covariance, i.e. the training set's own empirical distribution); call it as
    ``D(y, sigma)`` with y (B, ...) of the same trailing shape and sigma a scalar or (B,).
    ``affine=False``: the best linear denoiser (mean 0, second moments in place of the
    covariance)."""

    def __init__(self, images: Any, *, affine: bool = True):
        x = np.asarray(images, dtype=np.float64)
        if x.ndim < 2 or x.shape[0] < 1 or not np.all(np.isfinite(x)):
            raise ValueError(f"images must be a finite (N, ...) array with N >= 1, got shape "
                             f"{x.shape}")
        flat = x.reshape(x.shape[0], -1)
        mean = flat.mean(0) if affine else np.zeros(flat.shape[1])
        centred = flat - mean
        self._set(mean, centred.T @ centred / flat.shape[0], x.shape[1:])

    @classmethod
    def from_moments(cls, mean: Any, cov: Any, shape: tuple[int, ...] | None = None
                     ) -> WienerDenoiser:
        """The Wiener denoiser of given moments (mean (d,), symmetric PSD cov (d, d))."""
        mean = np.asarray(mean, dtype=np.float64).reshape(-1)
        cov = np.asarray(cov, dtype=np.float64)
        if cov.shape != (mean.size, mean.size) or not np.allclose(cov, cov.T):
            raise ValueError(f"cov must be a symmetric ({mean.size}, {mean.size}) matrix, got "
                             f"shape {cov.shape}")
        obj = cls.__new__(cls)
        obj._set(mean, cov, tuple(shape) if shape is not None else (mean.size,))
        return obj

    def _set(self, mean: np.ndarray, cov: np.ndarray, shape: tuple[int, ...]) -> None:
        self.mean, self.cov, self.shape = mean, 0.5 * (cov + cov.T), tuple(shape)
        evals, self.basis = np.linalg.eigh(self.cov)
        self.variances = np.clip(evals, 0.0, None)        # c_k (ascending), PSD up to rounding

    @property
    def d(self) -> int:
        return self.mean.size

    def _sigma(self, sigma: Any, batch: int) -> np.ndarray:
        s = np.broadcast_to(np.asarray(sigma, dtype=np.float64), (batch,))
        if not np.all(np.isfinite(s)) or np.any(s < 0):
            raise ValueError("sigma must be finite and >= 0")
        return s

    def shrinkage(self, sigma: float) -> np.ndarray:
        """Shrinkage factors ``c_k / (c_k + sigma^2)`` of the principal components (ascending c)."""
        s2 = float(self._sigma(sigma, 1)[0]) ** 2
        with np.errstate(invalid="ignore", divide="ignore"):
            lam = self.variances / (self.variances + s2)
        return np.where(self.variances + s2 > 0, lam, 1.0)

    def __call__(self, y: Any, sigma: Any) -> np.ndarray:
        y = np.asarray(y, dtype=np.float64)
        if y.shape[1:] != self.shape and y.reshape(len(y), -1).shape[1] != self.d:
            raise ValueError(f"y must have shape (B, {self.shape}), got {y.shape}")
        flat = y.reshape(len(y), -1)
        s = self._sigma(sigma, len(y))
        coef = (flat - self.mean) @ self.basis                       # (B, d) in the PCA basis
        with np.errstate(invalid="ignore", divide="ignore"):
            lam = self.variances[None] / (self.variances[None] + s[:, None] ** 2)
        lam = np.where(self.variances[None] + s[:, None] ** 2 > 0, lam, 1.0)
        return (self.mean + (coef * lam) @ self.basis.T).reshape(y.shape)

    def expected_mse(self, sigma: float) -> float:
        """Per-pixel MSE on the fitted distribution: ``sum_k c_k s^2 / (c_k + s^2) / d``."""
        s2 = float(self._sigma(sigma, 1)[0]) ** 2
        c = self.variances
        return float(np.sum(c * s2 / np.where(c + s2 > 0, c + s2, 1.0)) / self.d)
