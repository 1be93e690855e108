"""Gaussian-mixture data model (THEORY §11; docs/theory.md, "Gaussian mixtures") [std].

``p(y) = sum_c pi_c N(y; mu_c, C_c)`` with k components in R^d.  Under a noising process
``x_t = a y + sqrt(Delta) xi`` every component stays Gaussian, ``N(a mu_c, a^2 C_c + Delta I)``, so
the population score is a softmax over components of linear scores:

    s_t(x) = -sum_c r_c(x) (a^2 C_c + Delta I)^{-1} (x - a mu_c),
    r_c(x) = softmax_c( ln pi_c + ln N(x; a mu_c, a^2 C_c + Delta I) ).

All in numpy (theory/ never imports torch), log-space responsibilities, Cholesky factors per
component.  Shapes: means (k, d), covariances (k, d, d), weights (k,); points (..., d).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ._checks import as_generator, as_real, check_finite_array, check_int, check_positive, show
from .schedules import Schedule, get_schedule

__all__ = ["GaussianMixture"]

#: relative tolerance of the symmetry and positive-semidefiniteness checks on covariances
_COV_RTOL = 1e-10


class GaussianMixture:
    """Mixture of k Gaussians in R^d.

    Parameters
    ----------
    means : (k, d) component means.
    covariances : (k, d, d) full covariances, (k, d) diagonal variances, (k,) isotropic
        variances, or a scalar variance shared by all components; symmetric PSD (a PD
        covariance is needed only for the clean density; the noised one is always PD).
    weights : (k,) positive mixture weights (normalised here); default uniform.
    """

    def __init__(self, means: Any, covariances: Any = 1.0, weights: Any = None):
        mu = check_finite_array("means", means, ndim_min=2)
        if mu.ndim != 2 or mu.shape[0] < 1 or mu.shape[1] < 1:
            raise ValueError(f"means must have shape (k, d) with k, d >= 1, got {mu.shape}")
        k, d = mu.shape
        cov = as_real("covariances", covariances)
        if cov.ndim == 0 or cov.shape == (k,):
            cov = check_positive("covariances", cov, allow_zero=True)
            cov = np.broadcast_to(cov, (k,))[:, None, None] * np.eye(d)
        elif cov.shape == (k, d):
            cov = check_positive("covariances", cov, allow_zero=True)[:, :, None] * np.eye(d)
        elif cov.shape != (k, d, d):
            raise ValueError(f"covariances must be a scalar, (k,), (k, d) or (k, d, d) with "
                             f"k = {k}, d = {d}, got shape {cov.shape}")
        if not np.all(np.isfinite(cov)):
            raise ValueError("covariances must be finite")
        scale = max(float(np.max(np.abs(cov))), 1e-300)
        if not np.allclose(cov, cov.transpose(0, 2, 1), rtol=0, atol=_COV_RTOL * scale):
            raise ValueError("covariances must be symmetric")
        if np.min(np.linalg.eigvalsh(cov)) < -_COV_RTOL * scale:
            raise ValueError("covariances must be positive semidefinite")
        if weights is None:
            w = np.full(k, 1.0 / k)
        else:
            w = check_positive("weights", weights)
            if w.shape != (k,):
                raise ValueError(f"weights must have shape (k,) = ({k},), got {show(weights)}")
            w = w / w.sum()
        self.means = mu
        self.covariances = 0.5 * (cov + cov.transpose(0, 2, 1))
        self.weights = w
        for arr in (self.means, self.covariances, self.weights):
            arr.setflags(write=False)

    # ------------------------------------------------------------------ presets
    @classmethod
    def symmetric(cls, d: int, mean_norm: float = 1.0, std: float = 1.0, k: int = 2,
                  seed: int | None = 0) -> GaussianMixture:
        """k isotropic components of std ``std``; k = 2: means ``±m``, ``m = mean_norm * e``
        with e a random unit vector (seed), the Biroli et al. two-class model (their runs:
        ``m = (1, ..., 1)``, i.e. mean_norm = sqrt(d)); k > 2: k random means of norm
        mean_norm."""
        d = check_int("d", d, minimum=1)
        k = check_int("k", k, minimum=1)
        mean_norm = float(check_positive("mean_norm", mean_norm, allow_zero=True))
        std = float(check_positive("std", std))
        rng = np.random.default_rng(seed)
        dirs = rng.standard_normal((1 if k == 2 else k, d))
        dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
        means = np.concatenate([dirs, -dirs]) if k == 2 else dirs
        return cls(mean_norm * means, std**2)

    # ------------------------------------------------------------------ geometry
    @property
    def k(self) -> int:
        """Number of components."""
        return self.means.shape[0]

    @property
    def d(self) -> int:
        """Ambient dimension."""
        return self.means.shape[1]

    def mean(self) -> np.ndarray:
        """Mixture mean (d,)."""
        return self.weights @ self.means

    def covariance(self) -> np.ndarray:
        """Mixture covariance (d, d): ``sum pi_c (C_c + mu_c mu_c^T) - mu mu^T`` (within plus
        between components)."""
        centred = self.means - self.mean()
        return (np.einsum("c,cij->ij", self.weights, self.covariances)
                + np.einsum("c,ci,cj->ij", self.weights, centred, centred))

    # ------------------------------------------------------------------ sampling
    def sample(self, n: int, rng: np.random.Generator | int | None = None,
               return_labels: bool = False) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
        """``n`` samples (n, d) float64, and with ``return_labels`` their components (n,)."""
        n = check_int("n", n, minimum=0)
        rng = as_generator("rng", rng)
        labels = rng.choice(self.k, size=n, p=self.weights)
        root = np.stack([_psd_root(c) for c in self.covariances])       # C = R R^T
        z = rng.standard_normal((n, self.d))
        y = self.means[labels] + np.einsum("nij,nj->ni", root[labels], z)
        return (y, labels) if return_labels else y

    # ------------------------------------------------------------------ noising
    def noised(self, t: float, schedule: Schedule | str) -> GaussianMixture:
        """The law of ``x_t = a y + sqrt(Delta) xi`` at one time t: means ``a mu_c``,
        covariances ``a^2 C_c + Delta I``."""
        schedule = get_schedule(schedule)
        t_arr = schedule.check_scalar_time(t)
        a, delta = float(schedule.a(t_arr)), float(schedule.delta(t_arr))
        return GaussianMixture(a * self.means, a * a * self.covariances
                               + delta * np.eye(self.d), self.weights)

    def _factors(self) -> tuple[np.ndarray, np.ndarray]:
        """Precisions (k, d, d) and log-determinants (k,); ValueError if a covariance is
        singular (the clean density does not exist; use `noised`)."""
        try:
            chol = np.linalg.cholesky(self.covariances)
        except np.linalg.LinAlgError as exc:
            raise ValueError("covariances must be positive definite for the density and score "
                             "(a singular component has no density; use noised(t, schedule))"
                             ) from exc
        inv_chol = np.linalg.inv(chol)
        precision = np.einsum("cki,ckj->cij", inv_chol, inv_chol)
        logdet = 2.0 * np.sum(np.log(np.diagonal(chol, axis1=1, axis2=2)), axis=1)
        return precision, logdet

    def _log_joint(self, X: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        x = check_finite_array("x", X, last_dim=self.d)
        precision, logdet = self._factors()
        diff = x[..., None, :] - self.means                            # (..., k, d)
        pdiff = np.einsum("cij,...cj->...ci", precision, diff)
        quad = np.einsum("...ci,...ci->...c", diff, pdiff)
        log_joint = (np.log(self.weights) - 0.5 * quad - 0.5 * logdet
                     - 0.5 * self.d * np.log(2.0 * np.pi))
        return log_joint, pdiff, x

    def log_density(self, X: Any) -> np.ndarray:
        """``ln p(x)`` at points (..., d); shape (...)."""
        log_joint = self._log_joint(X)[0]
        top = log_joint.max(axis=-1)
        return top + np.log(np.exp(log_joint - top[..., None]).sum(axis=-1))

    def responsibilities(self, X: Any) -> np.ndarray:
        """Posterior component probabilities ``r_c(x)`` (..., k) (log-space softmax)."""
        log_joint = self._log_joint(X)[0]
        log_joint = log_joint - log_joint.max(axis=-1, keepdims=True)
        e = np.exp(log_joint)
        return e / e.sum(axis=-1, keepdims=True)

    def score(self, X: Any) -> np.ndarray:
        """``grad ln p(x) = -sum_c r_c(x) C_c^{-1} (x - mu_c)`` at points (..., d)."""
        log_joint, pdiff, _ = self._log_joint(X)
        log_joint = log_joint - log_joint.max(axis=-1, keepdims=True)
        r = np.exp(log_joint)
        r /= r.sum(axis=-1, keepdims=True)
        return -np.einsum("...c,...ci->...i", r, pdiff)

    def population_score(self, X: Any, t: float, schedule: Schedule | str) -> np.ndarray:
        """Score of the noised law p_t at points (..., d): ``self.noised(t, schedule).score``."""
        return self.noised(t, schedule).score(X)

    def __repr__(self) -> str:
        return f"GaussianMixture(k={self.k}, d={self.d})"

    def to_dict(self) -> dict:
        """Parameters for JSON records."""
        return {"means": self.means.tolist(), "covariances": self.covariances.tolist(),
                "weights": self.weights.tolist()}


def _psd_root(cov: np.ndarray) -> np.ndarray:
    """R with R R^T = cov for a symmetric PSD matrix (eigen-decomposition; zero allowed)."""
    lam, vec = np.linalg.eigh(cov)
    return vec * np.sqrt(np.clip(lam, 0.0, None))
