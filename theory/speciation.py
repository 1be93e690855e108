"""Speciation time of Biroli, Bonnaire, de Bortoli & Mézard 2024 (docs/theory.md, "Speciation").

Under VP they find ``t_S = (1/2) ln Lambda`` [pub], Lambda the largest eigenvalue of the data
covariance: the reverse dynamics commits to a class when the signal along the top principal
direction, of variance ``a^2 Lambda``, rises to the noise variance.  Written for any schedule
this is ``a(t_S)^2 Lambda = Delta(t_S)``, i.e. ``SNR(t_S) = 1 / Lambda`` [derived]:

- VP:  ``e^{-2t} Lambda = 1 - e^{-2t}``  ->  ``t_S = (1/2) ln(1 + Lambda)``; the published
  ``(1/2) ln Lambda`` is its large-Lambda form (they set Delta ~ 1), and the two differ by
  ``(1/2) ln(1 + 1/Lambda) <= 1/(2 Lambda)``;
- VE:  ``Delta(t_S) = t_S = Lambda``;
- DDPM and the geometric VE of the networks: the root of ``ln SNR(t) = -ln Lambda``.

``form="published"`` returns ``(1/2) ln Lambda`` exactly (VP only).

Collapse time of a mixture (``mixture_collapse_time``) by the entropy criterion of Biroli et al.:
the empirical score of N i.i.d. points collapses onto them when ``ln N`` exceeds the excess
entropy of p_t over the noise, ``I(t) = H(p_t) - (d/2) ln(2 pi e Delta)``, the mutual information
between y and x_t (for Gaussian data it is section 5b's ``sum_i ln(1 + a^2 v_i/Delta)/2`` and
gives the published ``t_C``).  I depends on t only through the SNR; it is estimated by Monte
Carlo, ``I = E[ln N(x; a y, Delta I) - ln p_t(x)]`` (the two terms share the noise, which cancels
most of the variance), with common random numbers across SNRs so that the root in ln SNR is that
of a smooth function.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from scipy import optimize, special

from ._checks import as_generator, check_choice, check_int, check_n_train
from .manifold import LinearManifold
from .mixture import GaussianMixture
from .schedules import VP, Schedule, get_schedule

__all__ = ["cloning_probability", "largest_covariance_eigenvalue", "mixture_collapse_time",
           "mixture_mutual_information", "speciation_time", "two_class_direction"]

#: Gauss-Hermite nodes of the cloning probability's Gaussian average (the integrand is a
#: polynomial in normal cdfs, entire: 80 nodes are exact to float64 for q up to ~1e4)
_HERMITE_NODES = 80
#: relative tolerance of the two-class symmetry checks (means, weights, covariances)
_SYMMETRY_RTOL = 1e-9
#: bracket of the ln-SNR root search (SNR from e^-60 to e^60); beyond, I(t) is ~0 or saturated
_LOG_SNR_RANGE = 60.0


def largest_covariance_eigenvalue(model: LinearManifold | GaussianMixture) -> float:
    """Largest eigenvalue Lambda of the data covariance (units of y^2).

    LinearManifold: the largest direction variance (normalised models: the exact second
    moments of the normalised generator, `LinearManifold.normalized_direction_variances`);
    GaussianMixture: of the mixture covariance (within plus between components).
    """
    if isinstance(model, LinearManifold):
        v = (model.normalized_direction_variances() if model.normalized
             else model.direction_variances)
        return float(np.max(v))
    if isinstance(model, GaussianMixture):
        return float(np.linalg.eigvalsh(model.covariance())[-1])
    raise ValueError(f"model must be a LinearManifold or a GaussianMixture, got "
                     f"{type(model).__name__}")


def speciation_time(model: LinearManifold | GaussianMixture, schedule: Schedule | str, *,
                    form: str = "snr") -> float:
    """Speciation time t_S (in the schedule's time units).

    Args:
        model: a LinearManifold or a GaussianMixture.
        schedule: a schedule object or name ("vp", "ve", ...).
        form: "snr" (default): the root of ``a(t)^2 Lambda = Delta(t)``, any schedule;
            "published": ``(1/2) ln Lambda``, VP only (Biroli et al. 2024, valid for
            Lambda >> 1).
    Returns:
        t_S as a float.  ValueError (naming the argument) for a model of another type, a
        schedule without the root in its time domain, or "published" with Lambda <= 1 or a
        schedule other than VP.
    """
    check_choice("form", form, ("snr", "published"))
    lam = largest_covariance_eigenvalue(model)
    schedule = get_schedule(schedule)
    if form == "published":
        if not isinstance(schedule, VP):
            raise ValueError(f"form='published' is the VP formula (1/2) ln Lambda; got schedule "
                             f"{schedule!r} (use form='snr')")
        if lam <= 1.0:
            raise ValueError(f"form='published' needs Lambda > 1 (t_S > 0), got Lambda = "
                             f"{lam:.6g} for this model (use form='snr')")
        return 0.5 * math.log(lam)
    t = schedule.time_at_log_snr(-math.log(lam))
    t = float(np.asarray(t, dtype=float))
    try:
        schedule.check_time(t)
    except ValueError as exc:
        raise ValueError(f"schedule: the speciation time (SNR = 1/Lambda, Lambda = {lam:.6g}) "
                         f"lies outside the time domain of {schedule!r}") from exc
    return t



def _mi_samples(model: GaussianMixture, log_snr: float, y: np.ndarray, xi: np.ndarray
                ) -> np.ndarray:
    """Per-sample ``ln N(x; y, Delta I) - ln p(x)`` at a = 1, Delta = e^{-log_snr} (n,)."""
    delta = math.exp(-log_snr)
    x = y + math.sqrt(delta) * xi
    noised = GaussianMixture(model.means, model.covariances + delta * np.eye(model.d),
                             model.weights)
    log_cond = -0.5 * model.d * math.log(2.0 * math.pi * delta) - 0.5 * np.sum(xi * xi, axis=1)
    return log_cond - noised.log_density(x)


def mixture_mutual_information(model: GaussianMixture, t: float, schedule: Schedule | str, *,
                               n_samples: int = 4096, rng: Any = 0) -> tuple[float, float]:
    """Monte-Carlo ``I(t) = H(p_t) - (d/2) ln(2 pi e Delta)`` in nats and its standard error."""
    if not isinstance(model, GaussianMixture):
        raise ValueError(f"model must be a GaussianMixture, got {type(model).__name__}")
    schedule = get_schedule(schedule)
    log_snr = float(schedule.log_snr(t))
    n_samples = check_int("n_samples", n_samples, minimum=2)
    gen = as_generator("rng", rng)
    y = model.sample(n_samples, gen)
    vals = _mi_samples(model, log_snr, y, gen.standard_normal(y.shape))
    return float(vals.mean()), float(vals.std(ddof=1) / math.sqrt(n_samples))


def mixture_collapse_time(model: GaussianMixture, n_train: Any, schedule: Schedule | str, *,
                          n_samples: int = 4096, rng: Any = 0) -> float:
    """Collapse time t_C of a Gaussian mixture: the root of ``I(t) = ln N`` (module docstring).

    Args:
        model: GaussianMixture; n_train: N >= 2; schedule: object or name.
        n_samples: Monte-Carlo samples of (y, noise), reused at every SNR (common random
            numbers); rng: seed or Generator.
    Returns:
        t_C (float, schedule time units).  Its Monte-Carlo error follows from the standard
        error of `mixture_mutual_information` divided by ``|dI/dt|``.  ValueError naming
        n_train when I(t) never reaches ln N (components of zero covariance with k < N).
    """
    if not isinstance(model, GaussianMixture):
        raise ValueError(f"model must be a GaussianMixture, got {type(model).__name__}")
    log_n = float(np.log(check_n_train(n_train)).reshape(-1)[0])
    schedule = get_schedule(schedule)
    n_samples = check_int("n_samples", n_samples, minimum=2)
    gen = as_generator("rng", rng)
    y = model.sample(n_samples, gen)
    xi = gen.standard_normal(y.shape)

    def excess(log_snr: float) -> float:
        return float(_mi_samples(model, log_snr, y, xi).mean()) - log_n

    lo, hi = -_LOG_SNR_RANGE, _LOG_SNR_RANGE
    if excess(hi) <= 0.0:
        raise ValueError(f"n_train = {n_train}: the mutual information I(t) stays below ln N "
                         "at every SNR (no collapse for this model)")
    if excess(lo) >= 0.0:
        raise ValueError(f"n_train = {n_train}: ln N is below I(t) even at SNR e^-60")
    root = optimize.brentq(excess, lo, hi, xtol=1e-12, rtol=1e-12)
    t = float(np.asarray(schedule.time_at_log_snr(root), dtype=float))
    try:
        schedule.check_time(t)
    except ValueError as exc:
        raise ValueError(f"n_train = {n_train}: t_C lies outside the time domain of "
                         f"{schedule!r}") from exc
    return t


def two_class_direction(model: GaussianMixture) -> tuple[np.ndarray, float, float]:
    """Unit vector e, mean norm mu and component std sigma of a symmetric two-class mixture.

    The model must have k = 2 equal weights, means ``±mu e`` and the same isotropic covariance
    ``sigma^2 I`` (`GaussianMixture.symmetric`); ValueError naming ``model`` otherwise.
    """
    if not isinstance(model, GaussianMixture):
        raise ValueError(f"model must be a GaussianMixture, got {type(model).__name__}")
    if model.k != 2:
        raise ValueError(f"model must have k = 2 components for the two-class cloning "
                         f"probability, got k = {model.k}")
    m0, m1 = model.means
    mu = float(np.linalg.norm(m0 - m1)) / 2.0
    var = float(model.covariances[0, 0, 0])
    scale = max(float(np.max(np.abs(model.means))), var, 1e-300)
    symmetric = (mu > 0 and np.allclose(m0, -m1, rtol=0, atol=_SYMMETRY_RTOL * scale)
                 and abs(model.weights[0] - 0.5) < _SYMMETRY_RTOL
                 and np.allclose(model.covariances, var * np.eye(model.d), rtol=0,
                                 atol=_SYMMETRY_RTOL * scale))
    if not symmetric or var <= 0:
        raise ValueError("model must be a symmetric two-class mixture (means +-m, equal "
                         "weights, one isotropic covariance sigma^2 I > 0), as built by "
                         "GaussianMixture.symmetric")
    return m0 / mu, mu, math.sqrt(var)


def cloning_probability(model: GaussianMixture, t: Any, schedule: Schedule | str) -> np.ndarray:
    """Probability that two reverse trajectories cloned at time t end in the same class.

    Two-class symmetric mixture (`two_class_direction`); the class of a sample is the side of
    the hyperplane between the means, ``sign(y . e)``. The exact reverse dynamics from a state
    x_t ends in a draw of the posterior ``p(y | x_t)``, so two clones end on the same side with
    probability ``p_+^2 + p_-^2``, ``p_+ = P(y . e > 0 | x_t)``; averaged over ``x_t ~ p_t``:

        phi(t) = E_{x_t}[ p_+(x_t)^2 + (1 - p_+(x_t))^2 ].

    Only the projection ``x = x_t . e`` matters: with ``V = a^2 sigma^2 + Delta``, component c
    (mean ``±mu``) has responsibility ``r_± = sigmoid(±2 a mu x / V)`` and posterior
    ``y . e | x, c ~ N(±mu + (a sigma^2 / V)(x ∓ a mu), sigma^2 Delta / V)``; ``x`` is averaged
    over each component's ``N(±a mu, V)`` by Gauss-Hermite. phi falls from 1 (t -> 0: the
    posterior is a point) to 1/2 (t -> inf: the posterior is the prior, and the classes are
    equally likely). Returns phi with t's shape (dimensionless).
    """
    _, mu, sigma = two_class_direction(model)
    schedule = get_schedule(schedule)
    t_arr = schedule.check_time(t)
    a = np.asarray(schedule.a(t_arr), dtype=float)[..., None]
    delta = np.asarray(schedule.delta(t_arr), dtype=float)[..., None]
    nodes, weights = np.polynomial.hermite_e.hermegauss(_HERMITE_NODES)
    weights = weights / weights.sum()
    var = a**2 * sigma**2 + delta
    post_sd = sigma * np.sqrt(delta / var)
    total = np.zeros(t_arr.shape)
    for sign in (1.0, -1.0):                     # the component x_t was drawn from
        x = sign * a * mu + np.sqrt(var) * nodes                       # (..., n)
        r_plus = special.expit(2.0 * a * mu * x / var)
        p_plus = (r_plus * _norm_cdf(_post_mean(mu, a, sigma, var, x, 1.0) / post_sd)
                  + (1.0 - r_plus) * _norm_cdf(_post_mean(mu, a, sigma, var, x, -1.0) / post_sd))
        total += 0.5 * np.sum(weights * (p_plus**2 + (1.0 - p_plus) ** 2), axis=-1)
    return total


def _post_mean(mu, a, sigma, var, x, sign):
    """Posterior mean of ``y . e`` given ``x_t . e = x`` in the component of mean ``sign mu``."""
    return sign * mu + a * sigma**2 / var * (x - sign * a * mu)


def _norm_cdf(z):
    return 0.5 * special.erfc(-z / math.sqrt(2.0))

