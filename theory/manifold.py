"""Gaussian linear-manifold data model (THEORY §2).

``y = U diag(s) z``, ``z ~ N(0, I_d)``: the first ``m = sum(dims)`` columns of the orthonormal
basis ``U`` (d x d) span the tangent space, split into subspaces k of dimension ``dims[k]`` and
standard deviation ``stds[k]``; the remaining ``d - m`` normal directions have std
``residual_std`` (0 for an exact manifold). With ``normalized=True`` each sample is rescaled
to unit L2 norm, as in the losing-dimensions authors' generator.

Shapes: ``direction_stds`` (d,), ``direction_subspace`` (d,) with -1 on normal directions,
``basis`` (d, d) with directions as columns, ``sample(n)`` (n, d).

Std versus variance is never ambiguous: the constructor takes exactly one of ``stds=`` or
``variances=``, and the object exposes both ``direction_stds`` and ``direction_variances``.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import cached_property

import numpy as np
from scipy import integrate, stats

from ._checks import as_real, check_choice, check_int, check_positive, show

__all__ = ["LinearManifold", "check_gaussian_manifold"]


class LinearManifold:
    """Gaussian data on a union of orthogonal linear subspaces (plus optional residual noise).

    Parameters
    ----------
    d : ambient dimension (>= 1).
    dims : dimensions ``m_k`` of the tangent subspaces, each >= 1, ``sum(dims) <= d``.
    stds, variances : per-subspace standard deviation ``s_k`` or variance ``s_k^2`` (exactly one;
        a scalar applies to all subspaces), each > 0.
    residual_std : std of the ``d - m`` normal directions (>= 0).
    normalized : rescale every sample to unit L2 norm (the paper's generator).
    basis : "axis" (tangent directions are the first m coordinate axes, subspace by subspace),
        "random" (a Haar-random orthogonal basis drawn from ``seed``), or a (d, d) orthogonal array.
    seed : seed for the random basis.
    """

    def __init__(
        self,
        d: int,
        dims: Sequence[int],
        stds: float | Sequence[float] | None = None,
        variances: float | Sequence[float] | None = None,
        residual_std: float = 0.0,
        normalized: bool = False,
        basis: str | np.ndarray = "axis",
        seed: int | None = None,
    ):
        self.d = check_int("d", d, minimum=1)
        dims = np.atleast_1d(np.asarray(dims))
        if dims.ndim != 1 or dims.size == 0 or not np.issubdtype(dims.dtype, np.integer):
            raise ValueError("dims must be a non-empty sequence of integers >= 1, got "
                             f"{show(dims)}")
        if np.any(dims < 1):
            raise ValueError(f"dims out of range: each subspace dimension must be >= 1, got {dims}")
        if int(dims.sum()) > self.d:
            raise ValueError(
                f"dims out of range: sum(dims) = {int(dims.sum())} must be <= d = {self.d}"
            )
        self.dims = tuple(int(m) for m in dims)
        if (stds is None) == (variances is None):
            raise ValueError("give exactly one of stds= (standard deviations) or variances=")
        if stds is not None:
            s = check_positive("stds", stds)
        else:
            s = np.sqrt(check_positive("variances", variances))
        s = np.broadcast_to(np.atleast_1d(s), (len(self.dims),)) if s.size == 1 else s
        if s.shape != (len(self.dims),):
            raise ValueError(
                f"stds/variances must have one entry per subspace ({len(self.dims)}), got {s.size}"
            )
        self.stds = tuple(float(x) for x in s)
        self.residual_std = float(check_positive("residual_std", residual_std, allow_zero=True))
        self.normalized = bool(normalized)
        self.seed = seed
        if isinstance(basis, str):
            check_choice("basis", basis, ("axis", "random"))
            self.basis_kind = basis
            self._basis_array = None
        else:
            arr = as_real("basis", basis)
            if arr.shape != (self.d, self.d):
                raise ValueError(f"basis must be (d, d) = ({self.d}, {self.d}), got {arr.shape}")
            if not np.allclose(arr.T @ arr, np.eye(self.d), atol=1e-10):
                raise ValueError("basis must be orthogonal (U^T U = I to 1e-10)")
            self.basis_kind = "array"
            self._basis_array = arr

    # ------------------------------------------------------------------ presets
    @classmethod
    def figure4(cls, theory: bool = False, basis: str = "axis", seed: int | None = None
                ) -> LinearManifold:
        """The losing-dimensions Figure-4 geometry: d = 30, subspaces of dimension 2 and 5 with
        *stds* 1 and 0.3, normalised samples; residual std 0.01 in the generator, 1e-6 in the
        published theory curve (``theory=True``)."""
        return cls(30, (2, 5), stds=(1.0, 0.3), residual_std=1e-6 if theory else 0.01,
                   normalized=True, basis=basis, seed=seed)

    # ------------------------------------------------------------------ geometry
    @property
    def m(self) -> int:
        """Tangent dimension sum(dims)."""
        return int(sum(self.dims))

    @property
    def n_subspaces(self) -> int:
        return len(self.dims)

    @property
    def variances(self) -> tuple[float, ...]:
        """Per-subspace variances s_k^2."""
        return tuple(s * s for s in self.stds)

    @cached_property
    def direction_stds(self) -> np.ndarray:
        """Per-direction stds (d,), ordered like the basis columns: subspaces, then normal."""
        out = np.full(self.d, self.residual_std)
        out[: self.m] = np.repeat(self.stds, self.dims)
        out.setflags(write=False)
        return out

    @property
    def direction_variances(self) -> np.ndarray:
        """Per-direction variances (d,)."""
        return self.direction_stds**2

    @cached_property
    def direction_subspace(self) -> np.ndarray:
        """Subspace index of each direction (d,), -1 on the normal directions."""
        out = np.full(self.d, -1, dtype=np.int64)
        out[: self.m] = np.repeat(np.arange(self.n_subspaces), self.dims)
        out.setflags(write=False)
        return out

    @cached_property
    def basis(self) -> np.ndarray:
        """Orthonormal basis (d, d): column i is direction i."""
        if self.basis_kind == "axis":
            out = np.eye(self.d)
        elif self.basis_kind == "random":
            out = stats.ortho_group.rvs(self.d, random_state=self.seed) if self.d > 1 else np.eye(1)
        else:
            out = self._basis_array.copy()
        out.setflags(write=False)
        return out

    def subspace_basis(self, k: int) -> np.ndarray:
        """Orthonormal columns (d, m_k) spanning subspace k; k = -1 gives the normal space."""
        check_int("k", k, minimum=-1, maximum=self.n_subspaces - 1)
        return self.basis[:, self.direction_subspace == k]

    def covariance(self) -> np.ndarray:
        """Covariance of the un-normalised generator, U diag(s^2) U^T (d, d)."""
        return (self.basis * self.direction_variances) @ self.basis.T

    def energy_groups(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Stds (G,), dims (G,) of the groups of equal std, and the group of each direction
        (d,).

        Groups: the K tangent subspaces, then the normal space when residual_std > 0 (and
        d > m). Directions of zero std get group -1 (for the empirical score: a constant
        energy, which drops out of the weights).
        """
        stds = list(self.stds)
        dims = list(self.dims)
        group = np.asarray(self.direction_subspace).copy()
        if self.residual_std > 0 and self.d > self.m:
            stds.append(self.residual_std)
            dims.append(self.d - self.m)
            group[group < 0] = self.n_subspaces
        return np.asarray(stds, float), np.asarray(dims, float), group

    # ------------------------------------------------------------------ sampling
    def sample(self, n: int, rng: np.random.Generator | int | None = None) -> np.ndarray:
        """Draw ``n`` samples (n, d) in float64."""
        n = check_int("n", n, minimum=0)
        rng = np.random.default_rng(rng)
        z = rng.standard_normal((n, self.d)) * self.direction_stds
        y = z @ self.basis.T
        if self.normalized:
            norms = np.linalg.norm(y, axis=1, keepdims=True)
            y = y / np.where(norms > 0, norms, 1.0)
        return y

    def normalized_direction_variances(self) -> np.ndarray:
        """Exact per-direction second moments E[y_i^2] of the *normalised* generator (d,).

        With y = s*z/|s*z|, E[s_i^2 z_i^2 / sum_j s_j^2 z_j^2] follows from
        1/Q = int_0^inf e^{-uQ} du and E[z^2 e^{-c z^2}] = (1+2c)^{-3/2}:
        E[y_i^2] = int_0^inf s_i^2 (1+2u s_i^2)^{-1} prod_j (1+2u s_j^2)^{-1/2} du.
        Directions sharing a std share the value, so one integral per distinct std.
        """
        s2 = self.direction_variances
        distinct, inverse = np.unique(s2, return_inverse=True)
        counts = np.bincount(inverse)

        def log_prod(u):
            return -0.5 * np.sum(counts * np.log1p(2.0 * u * distinct))

        vals = np.zeros(distinct.size)
        for j, v in enumerate(distinct):
            if v == 0.0:
                continue
            # substitute u = e^r to cover the many decades the integrand spans
            def integrand(r, v=v):
                u = np.exp(r)
                return u * v / (1.0 + 2.0 * u * v) * np.exp(log_prod(u))

            vals[j] = integrate.quad(integrand, -60.0, 60.0, limit=400, epsabs=0.0,
                                     epsrel=1e-11)[0]
        return vals[inverse]

    def __repr__(self) -> str:
        return (f"LinearManifold(d={self.d}, dims={self.dims}, stds={self.stds}, "
                f"residual_std={self.residual_std}, normalized={self.normalized}, "
                f"basis={self.basis_kind!r}, seed={self.seed})")

    def to_dict(self) -> dict:
        """Parameters for JSON records (stds, never variances, to avoid ambiguity)."""
        return {"d": self.d, "dims": list(self.dims), "stds": list(self.stds),
                "residual_std": self.residual_std, "normalized": self.normalized,
                "basis": self.basis_kind, "seed": self.seed}


def check_gaussian_manifold(model: object, reason: str) -> LinearManifold:
    """``model`` if it is an un-normalised LinearManifold (Gaussian data), else a ValueError
    naming ``model``; ``reason`` ends the message (why the caller needs Gaussian data)."""
    if not isinstance(model, LinearManifold):
        raise ValueError(f"model must be a LinearManifold, got {type(model).__name__}")
    if model.normalized:
        raise ValueError(f"model must be un-normalized (normalized=False): {reason}")
    return model
