"""Closed-form (analytic) denoisers of a training set: the models trained denoisers follow.

Every model is the posterior mean ``E[x | y]`` of some model of the data, for ``y = x + sigma z``
(VE noise, sigma told to the model: it is not blind), and is called as ``D(y, sigma)``:

    y      (B, C, H, W)   noisy images (numpy or torch; the result has the same kind)
    sigma  scalar or (B,) noise levels, > 0
    D      (B, C, H, W)   float64

The models (definitions and sources in docs/numerics.md, "Analytic denoisers"):

- ``EmpiricalPosteriorMean``: x uniform on the N training images (the memorizing denoiser:
  the exact empirical score by Tweedie, ``s = (D - y) / sigma^2``).
- ``GaussianPosteriorMean``: x Gaussian with the training set's mean and covariance, optionally
  truncated to its ``rank`` leading principal components (the Wiener filter).
- ``MaskedPosteriorMean``: each output pixel i is the empirical posterior mean of pixel i given
  only the pixels of a mask ``M_i`` (Niedoba et al. 2024-25, patch posterior means; Kamb &
  Ganguli 2024, the local score machine). ``square_patch_masks`` gives square patches;
  ``wiener_locality_masks`` the masks read off the Wiener filter (Lukoianov et al. 2025).
- ``EquivariantPatchPosteriorMean``: the translation-equivariant local score machine (ELS,
  Kamb & Ganguli 2024): pixel i is the posterior mean of a patch centre over *all* training
  patches at every position, given the noisy patch around i (periodic boundary).

All sums over training images or patches run in chunks with a streaming log-sum-exp, so memory
is bounded by ``memory_bytes`` whatever N (N = 1e4 images of 16 x 16 fit in the default).
All models are differentiable torch functions: ``jacobian`` gives dD/dy by autodiff.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from geomem.theory._checks import check_choice, check_int, check_positive, check_real

from ._patch_posterior import patch_moments, scatter_patch_jacobian
from .linear_denoiser import WienerDenoiser

__all__ = [
    "MEMORY_BYTES",
    "AnalyticDenoiser",
    "EmpiricalPosteriorMean",
    "EquivariantPatchPosteriorMean",
    "GaussianPosteriorMean",
    "MaskedPosteriorMean",
    "WienerMaskedPosteriorMean",
    "square_patch_masks",
    "wiener_locality_masks",
]

#: default bound on the largest intermediate array (bytes): 256 MiB keeps several models and a
#: network in the 24 GB of a CI machine and makes chunks large enough for BLAS to run at speed
MEMORY_BYTES = 256 * 2**20
BOUNDARIES = ("circular", "truncate")


def _as_images(name: str, value: Any, ndim: int = 4) -> torch.Tensor:
    arr = value.detach().to("cpu", torch.float64).numpy() if torch.is_tensor(value) else value
    arr = np.asarray(arr, dtype=np.float64)
    if arr.ndim != ndim or arr.shape[0] < 1:
        raise ValueError(f"{name} must have shape (N, C, H, W) with N >= 1, got {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} must be finite (no NaN or inf)")
    return torch.from_numpy(arr)


class _StreamingSoftmaxMean:
    """``sum_n softmax_n(logits) v_n`` accumulated over chunks of n in log space.

    ``add(logits, axis, weighted)``: logits of one chunk, the chunk axis, and a function that
    maps the chunk's unnormalised weights ``exp(logits - running max)`` to their weighted sum
    of values. Out-of-place updates, so the result is differentiable."""

    def __init__(self) -> None:
        self.log_max: torch.Tensor | None = None
        self.total: torch.Tensor | None = None
        self.weighted: torch.Tensor | None = None

    def add(self, logits: torch.Tensor, axis: int,
            weighted: Callable[[torch.Tensor], torch.Tensor]) -> None:
        chunk_max = logits.amax(axis).detach()            # the shift is a constant: no gradient
        if self.log_max is None:
            new_max = chunk_max
        else:
            new_max = torch.maximum(self.log_max, chunk_max)
        p = torch.exp(logits - new_max.unsqueeze(axis))
        total, part = p.sum(axis), weighted(p)
        if self.log_max is not None:
            scale = torch.exp(self.log_max - new_max)
            total = total + self.total * scale
            part = part + self.weighted * _expand(scale, part)
        self.log_max, self.total, self.weighted = new_max, total, part

    def mean(self) -> torch.Tensor:
        return self.weighted / _expand(self.total, self.weighted)


def _expand(scale: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return scale.reshape(scale.shape + (1,) * (like.ndim - scale.ndim))


class AnalyticDenoiser:
    """Base class: validates ``(y, sigma)``, converts to float64 torch and back, and leaves the
    model to ``_denoise(y (B, C, H, W) float64 tensor, sigma (B,) tensor)``."""

    def __init__(self, images: Any, *, memory_bytes: int = MEMORY_BYTES,
                 device: str | torch.device = "cpu"):
        self.images = _as_images("images", images).to(device)
        self.shape = tuple(self.images.shape[1:])
        self.memory_bytes = check_int("memory_bytes", memory_bytes, minimum=2**20)
        self.device = torch.device(device)

    @property
    def n_train(self) -> int:
        return int(self.images.shape[0])

    @property
    def d(self) -> int:
        return int(math.prod(self.shape))

    def _chunk(self, per_item: int) -> int:
        """How many training items fit the memory budget when each costs ``per_item`` floats."""
        return max(1, self.memory_bytes // (8 * max(per_item, 1)))

    def _check(self, y: Any, sigma: Any) -> tuple[torch.Tensor, torch.Tensor]:
        y_arr = y if torch.is_tensor(y) else np.asarray(y, dtype=np.float64)
        if tuple(y_arr.shape[1:]) != self.shape or y_arr.ndim != 4:
            raise ValueError(f"y must have shape (B, {', '.join(map(str, self.shape))}), got "
                             f"{tuple(y_arr.shape)}")
        y_t = torch.as_tensor(y_arr).to(self.device, torch.float64)
        if not bool(torch.isfinite(y_t).all()):
            raise ValueError("y must be finite (no NaN or inf)")
        s = sigma.detach().cpu().numpy() if torch.is_tensor(sigma) else sigma
        s = check_positive("sigma", s)
        if s.ndim > 1 or s.size not in (1, y_t.shape[0]):
            raise ValueError(f"sigma must be a scalar or have shape ({y_t.shape[0]},), got "
                             f"shape {s.shape}")
        s_t = torch.as_tensor(np.broadcast_to(s.reshape(-1), (y_t.shape[0],)).copy(),
                              device=self.device, dtype=torch.float64)
        return y_t, s_t

    def __call__(self, y: Any, sigma: Any) -> Any:
        y_t, s_t = self._check(y, sigma)
        with torch.no_grad():
            out = self._denoise(y_t, s_t)
        return out if torch.is_tensor(y) else out.cpu().numpy()

    def jacobian(self, y: Any, sigma: float) -> torch.Tensor:
        """dD/dy at each image of y (B, C, H, W) at one noise level: (B, d, d) float64, by
        reverse-mode autodiff through the model (the streaming sum included), one output pixel
        at a time: vectorising over the d cotangents would multiply the memory of the patch
        models by d (34 GB for ELS on 16 x 16 images at the default budget). ELS overrides it with
        its closed form."""
        y_t, s_t = self._check(y, sigma)

        def flat(v: torch.Tensor) -> torch.Tensor:
            return self._denoise(v.reshape(1, *self.shape), s_t[:1]).reshape(-1)

        return torch.stack([torch.autograd.functional.jacobian(flat, v.reshape(-1))
                            for v in y_t])

    def _denoise(self, y: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


class EmpiricalPosteriorMean(AnalyticDenoiser):
    """Posterior mean for x uniform on the training images: ``sum_n w_n x_n`` with
    ``w = softmax_n(-|y - x_n|^2 / (2 sigma^2))`` (the memorizing denoiser)."""

    def _denoise(self, y: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        yf, xf = y.reshape(len(y), -1), self.images.reshape(self.n_train, -1)
        y2, inv = (yf * yf).sum(1, keepdim=True), 1.0 / (2 * sigma[:, None] ** 2)
        acc, step = _StreamingSoftmaxMean(), self._chunk(len(y) + self.d)
        for start in range(0, self.n_train, step):
            xc = xf[start:start + step]
            dist2 = (y2 + (xc * xc).sum(1)[None] - 2 * yf @ xc.T).clamp_min(0.0)
            acc.add(-dist2 * inv, 1, lambda p, xc=xc: p @ xc)
        return acc.mean().reshape(y.shape)


class GaussianPosteriorMean(AnalyticDenoiser):
    """Posterior mean for x Gaussian with the training set's mean and covariance (the Wiener
    filter ``mu + C (C + sigma^2 I)^{-1} (y - mu)``); with ``rank`` = k, the covariance keeps
    only its k leading principal components (the low-rank Gaussian model: y is projected on
    the mean plus a k-dimensional subspace). ``affine=False``: no mean, second moments (the
    best linear map, which a bias-free network can represent)."""

    def __init__(self, images: Any, *, rank: int | None = None, affine: bool = True,
                 memory_bytes: int = MEMORY_BYTES, device: str | torch.device = "cpu"):
        super().__init__(images, memory_bytes=memory_bytes, device=device)
        full = WienerDenoiser(self.images.cpu().numpy(), affine=affine)
        self.rank = self.d if rank is None else check_int("rank", rank, minimum=1,
                                                          maximum=self.d)
        keep = slice(self.d - self.rank, self.d)              # eigh: ascending variances
        self.mean = torch.from_numpy(full.mean).to(self.device)
        self.basis = torch.from_numpy(full.basis[:, keep].copy()).to(self.device)
        self.variances = torch.from_numpy(full.variances[keep].copy()).to(self.device)

    def filter_matrix(self, sigma: float) -> np.ndarray:
        """The linear part ``W = U diag(c / (c + sigma^2)) U^T`` (d, d) at one sigma."""
        s2 = float(check_positive("sigma", sigma).reshape(-1)[0]) ** 2
        lam = self.variances / (self.variances + s2)
        return ((self.basis * lam) @ self.basis.T).cpu().numpy()

    def _denoise(self, y: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        coef = (y.reshape(len(y), -1) - self.mean) @ self.basis          # (B, rank)
        lam = self.variances[None] / (self.variances[None] + sigma[:, None] ** 2)
        return (self.mean + (coef * lam) @ self.basis.T).reshape(y.shape)


class MaskedPosteriorMean(AnalyticDenoiser):
    """Local empirical posterior mean: output pixel i is ``sum_n w_{n,i} x_{n,i}`` with
    ``w_{., i} = softmax_n(-|y_{M_i} - x_{n, M_i}|^2 / (2 sigma^2))``: the posterior mean of
    pixel i for x uniform on the training images, given only the noisy pixels of the mask
    M_i. ``masks`` (d, d), row i = M_i over the flattened (C, H, W) pixels; a mask of all
    pixels gives the empirical posterior mean. Not translation equivariant: pixel i only sees
    the training images' pixels at the same positions."""

    def __init__(self, images: Any, masks: Any, *, memory_bytes: int = MEMORY_BYTES,
                 device: str | torch.device = "cpu"):
        super().__init__(images, memory_bytes=memory_bytes, device=device)
        self.masks = self._check_masks(masks)

    def _check_masks(self, masks: Any) -> torch.Tensor:
        m = np.asarray(masks.cpu() if torch.is_tensor(masks) else masks)
        if m.shape != (self.d, self.d) or not np.all((m == 0) | (m == 1)):
            raise ValueError(f"masks must be a 0/1 (d, d) = ({self.d}, {self.d}) array, got "
                             f"shape {m.shape}")
        if not np.all(np.diagonal(m) == 1):
            raise ValueError("masks must contain each output pixel itself (diagonal all 1)")
        return torch.as_tensor(m, dtype=torch.float64, device=self.device)

    def _denoise(self, y: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        return _masked_mean(self, y, sigma, self.masks)


def _masked_mean(model: AnalyticDenoiser, y: torch.Tensor, sigma: torch.Tensor,
                 masks: torch.Tensor) -> torch.Tensor:
    """The local posterior mean with masks (d, d); distances by three mask products:
    |y_M - x_M|^2 = M (y^2) + M (x^2) - 2 M (y x), the last one (B, n, d)."""
    b, d = len(y), model.d
    yf, xf, mt = y.reshape(b, -1), model.images.reshape(model.n_train, -1), masks.T
    y2, inv = (yf * yf) @ mt, 1.0 / (2 * sigma[:, None, None] ** 2)
    acc, step = _StreamingSoftmaxMean(), model._chunk(3 * b * d)
    for start in range(0, model.n_train, step):
        xc = xf[start:start + step]
        cross = ((yf[:, None, :] * xc[None]).reshape(-1, d) @ mt).reshape(b, len(xc), d)
        dist2 = (y2[:, None] + ((xc * xc) @ mt)[None] - 2 * cross).clamp_min(0.0)
        acc.add(-dist2 * inv, 1, lambda p, xc=xc: (p * xc[None]).sum(1))
    return acc.mean().reshape(y.shape)


def square_patch_masks(shape: tuple[int, int, int], patch_size: int,
                       boundary: str = "circular") -> np.ndarray:
    """Masks (d, d) of P x P patches (all channels) centred on each pixel of images of shape
    (C, H, W); P odd. ``boundary="circular"``: the patch wraps around (periodic images);
    ``"truncate"``: the part outside the image is dropped. With P >= the image size
    (circular) or P >= 2 max(H, W) - 1 (truncate) every mask is the whole image."""
    c, h, w = (check_int(n, v, minimum=1) for n, v in zip(("C", "H", "W"), shape, strict=True))
    p = check_int("patch_size", patch_size, minimum=1)
    if p % 2 == 0:
        raise ValueError(f"patch_size must be an odd integer >= 1, got {p}")
    check_choice("boundary", boundary, BOUNDARIES)
    r = p // 2
    rows, cols = np.arange(h), np.arange(w)
    if boundary == "circular":
        dr = np.abs(rows[:, None] - rows[None])
        dc = np.abs(cols[:, None] - cols[None])
        dr, dc = np.minimum(dr, h - dr), np.minimum(dc, w - dc)     # wrap-around distance
    else:
        dr = np.abs(rows[:, None] - rows[None])
        dc = np.abs(cols[:, None] - cols[None])
    spatial = ((dr <= r)[:, None, :, None] & (dc <= r)[None, :, None, :]).reshape(h * w, h * w)
    return np.tile(spatial, (c, c)).astype(np.float64)


def wiener_locality_masks(wiener: GaussianPosteriorMean, sigma: float, threshold: float
                          ) -> np.ndarray:
    """Masks (d, d) read off the Wiener filter at ``sigma`` (Lukoianov et al. 2025): pixel i
    sees the pixels j whose filter weight is at least ``threshold`` times the row's largest,
    ``|W_ij| >= threshold max_j |W_ij|`` (and itself). threshold in (0, 1]."""
    tau = check_real("threshold", threshold)
    if not 0 < tau <= 1:
        raise ValueError(f"threshold out of range: allowed 0 < threshold <= 1, got {tau}")
    w = np.abs(wiener.filter_matrix(sigma))
    masks = (w >= tau * w.max(axis=1, keepdims=True)).astype(np.float64)
    np.fill_diagonal(masks, 1.0)
    return masks


class WienerMaskedPosteriorMean(AnalyticDenoiser):
    """``MaskedPosteriorMean`` whose masks follow the Wiener filter of the training set at each
    noise level (``wiener_locality_masks``): small patches at small sigma, wide ones at large
    sigma, with the shapes the data's correlations give."""

    def __init__(self, images: Any, threshold: float, *, memory_bytes: int = MEMORY_BYTES,
                 device: str | torch.device = "cpu"):
        super().__init__(images, memory_bytes=memory_bytes, device=device)
        self.wiener = GaussianPosteriorMean(self.images, device=device)
        self.threshold = threshold
        wiener_locality_masks(self.wiener, 1.0, threshold)           # checks the threshold
        self._masks: dict[float, torch.Tensor] = {}

    def masks(self, sigma: float) -> torch.Tensor:
        key = float(sigma)
        if key not in self._masks:
            self._masks[key] = torch.as_tensor(
                wiener_locality_masks(self.wiener, key, self.threshold), device=self.device)
        return self._masks[key]

    def _denoise(self, y: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        out = torch.empty_like(y)
        for s in torch.unique(sigma):
            rows = sigma == s
            out[rows] = _masked_mean(self, y[rows], sigma[rows], self.masks(float(s)))
        return out


class EquivariantPatchPosteriorMean(AnalyticDenoiser):
    """The equivariant local score machine (ELS, Kamb & Ganguli 2024), periodic boundary:
    pixel i (all channels) is ``sum_q w_q c_q`` over every P x P training patch q (all images,
    all positions) with centre pixel c_q and ``w = softmax_q(-|y_{P(i)} - q|^2 /
    (2 sigma^2))``, y_{P(i)} the noisy patch around i. Commutes with circular shifts of y.
    With P >= the image size it is the empirical posterior mean of the training set enlarged
    by all its circular translations."""

    def __init__(self, images: Any, patch_size: int, *, memory_bytes: int = MEMORY_BYTES,
                 device: str | torch.device = "cpu"):
        super().__init__(images, memory_bytes=memory_bytes, device=device)
        self.patch_size = check_int("patch_size", patch_size, minimum=1)
        if self.patch_size % 2 == 0:
            raise ValueError(f"patch_size must be an odd integer >= 1, got {self.patch_size}")

    def _patches(self, x: torch.Tensor) -> torch.Tensor:
        """(n, C, H, W) -> (n, H W, C P^2): the circular patch around every pixel."""
        r = self.patch_size // 2
        c, h, w = self.shape
        # wrap more than once when the patch is larger than the image
        reps_h, reps_w = -(-r // h), -(-r // w)
        tiled = x.repeat(1, 1, 2 * reps_h + 1, 2 * reps_w + 1)
        top, left = reps_h * h - r, reps_w * w - r
        window = tiled[:, :, top:top + h + 2 * r, left:left + w + 2 * r]
        return F.unfold(window, self.patch_size).transpose(1, 2)

    def _pool(self, patch_block: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Training patches (M, C P^2) and their centres (M, C), whole images at a time."""
        c, h, w = self.shape
        step = max(1, patch_block // (h * w))
        for start in range(0, self.n_train, step):
            xc = self.images[start:start + step]
            yield (self._patches(xc).reshape(-1, c * self.patch_size ** 2),
                   xc.permute(0, 2, 3, 1).reshape(-1, c))

    def _moments(self, y: torch.Tensor, sigma: torch.Tensor, covariance: bool
                 ) -> dict[str, torch.Tensor]:
        yp = self._patches(y)                                        # (B, HW, C P^2)
        inv = (1.0 / (2 * sigma ** 2)).repeat_interleave(yp.shape[1])
        return patch_moments(yp.reshape(-1, yp.shape[2]), inv, self._pool,
                             covariance=covariance)

    def jacobian(self, y: Any, sigma: float) -> torch.Tensor:
        """dD/dy (B, d, d) in closed form: output pixel i depends on the noisy patch around
        it only, through ``(E_w[c q^T] - E_w[c] E_w[q]^T) / sigma^2`` (the posterior
        covariance of centre and patch), placed at the patch's circular positions (summed
        where a patch larger than the image wraps onto itself). One pass over the patch
        pool for all images, where autodiff would need one per output pixel."""
        y_t, s_t = self._check(y, sigma)
        c, h, w = self.shape
        m = self._moments(y_t, s_t, covariance=True)
        k = m["patch"].shape[1]
        cov = m["value_patch"] - m["value"][:, :, None] * m["patch"][:, None, :]
        cov = cov * (1.0 / s_t ** 2).repeat_interleave(h * w)[:, None, None]    # (B HW, C, K)
        # input pixel index of every (output pixel, patch entry): the patch's own layout
        index = torch.arange(self.d, dtype=torch.float64, device=self.device)
        source = self._patches(index.reshape(1, *self.shape))[0].long()          # (HW, K)
        return scatter_patch_jacobian(cov.reshape(len(y_t), h * w, c, k), source)

    def _denoise(self, y: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        if not (torch.is_grad_enabled() and y.requires_grad):
            # the fast blocked route; the differentiable one below is its autodiff reference
            value = self._moments(y, sigma, covariance=False)["value"]       # (B HW, C)
            return value.reshape(len(y), *self.shape[1:], -1).permute(0, 3, 1, 2)
        c, h, w = self.shape
        yp = self._patches(y)                                        # (B, HW, C P^2)
        y2, inv = (yp * yp).sum(2, keepdim=True), 1.0 / (2 * sigma[:, None, None] ** 2)
        acc = _StreamingSoftmaxMean()
        step = self._chunk(2 * len(y) * h * w * h * w)               # images per chunk
        for start in range(0, self.n_train, step):
            xc = self.images[start:start + step]
            q = self._patches(xc).reshape(-1, yp.shape[2])           # (n HW, C P^2)
            centres = xc.permute(0, 2, 3, 1).reshape(-1, c)          # (n HW, C)
            dist2 = (y2 + (q * q).sum(1)[None, None] - 2 * yp @ q.T).clamp_min(0.0)
            acc.add(-dist2 * inv, 2, lambda p, centres=centres: p @ centres)
        return acc.mean().transpose(1, 2).reshape(y.shape)           # (B, C, H W) -> image
