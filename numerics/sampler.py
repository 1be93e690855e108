"""Stochastic coarse-to-fine gradient ascent sampler for blind denoisers (Kadkhodaie &
Simoncelli; THEORY section 8).

For a blind denoiser D with residual ``r(y) = y - D(y)`` (r is sigma^2 times minus the score):
``h_t = h0 t / (1 + h0 (t - 1))``, ``sigma_t = ||r|| / sqrt(d)``,
``gamma_t = sigma_t sqrt((1 - beta h_t)^2 - (1 - h_t)^2)``, ``y <- y - h_t r + gamma_t z``,
stopping when ``sigma_t < sigma_final``. ``beta`` in (0, 1] sets the fraction of noise removed
per step (beta = 1: deterministic ascent, no injected noise). Each image of the batch runs
until its own sigma_t falls below ``sigma_final`` (then it is frozen).
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import torch

from geomem.theory._checks import as_real

__all__ = ["SampleResult", "cosine_similarity", "sample"]

#: images are initialised around this grey level (data in [0, 1])
INITIAL_MEAN = 0.5


@dataclasses.dataclass
class SampleResult:
    """Samples (B, C, H, W) float64 numpy, the per-step effective noise ``sigma_trace``
    (steps, B) (its last finite entry is the first value below ``sigma_final``; NaN after),
    the number of steps per image (B,) and whether it reached ``sigma_final`` (B,) bool."""

    samples: np.ndarray
    sigma_trace: np.ndarray
    steps: np.ndarray
    converged: np.ndarray


def sample(denoiser: torch.nn.Module, shape: tuple[int, int, int, int], *, seed: int = 0,
           sigma0: float = 1.0, sigma_final: float = 0.01, h0: float = 0.01,
           beta: float = 0.5, max_steps: int = 2000) -> SampleResult:
    """Draw ``shape[0]`` samples from the prior implicit in ``denoiser``.

    The initial image and every injected noise come from one torch.Generator seeded by
    ``seed`` and drawn for the whole batch, so two denoisers sampled with the same seed and
    shape see identical initial noise and identical noise at every step."""
    if not 0 < beta <= 1:
        raise ValueError(f"beta out of range: allowed 0 < beta <= 1, got {beta}")
    if not 0 < h0 <= 1:
        raise ValueError(f"h0 out of range: allowed 0 < h0 <= 1, got {h0}")
    if not 0 < sigma_final < sigma0:
        raise ValueError(f"need 0 < sigma_final < sigma0, got {sigma_final}, {sigma0}")
    if len(shape) != 4 or min(shape) < 1:
        raise ValueError(f"shape must be (B, C, H, W) with positive entries, got {shape}")
    param = next(iter(denoiser.parameters()), None)
    buf = next(iter(denoiser.buffers()), None)
    ref = param if param is not None else buf
    dtype = ref.dtype if ref is not None else torch.float32
    device = ref.device if ref is not None else torch.device("cpu")
    gen = torch.Generator().manual_seed(seed)
    batch, d = shape[0], math.prod(shape[1:])
    y = (INITIAL_MEAN + sigma0 * torch.randn(shape, generator=gen, dtype=torch.float64))
    y = y.to(dtype=dtype, device=device)
    active = torch.ones(batch, dtype=torch.bool, device=device)
    finished = torch.zeros(batch, dtype=torch.bool, device=device)
    steps = torch.zeros(batch, dtype=torch.long)
    trace = []
    with torch.no_grad():
        for t in range(1, max_steps + 1):
            z = torch.randn(shape, generator=gen, dtype=torch.float64)
            z = z.to(dtype=dtype, device=device)
            r = y - denoiser(y)
            sigma = r.reshape(batch, -1).norm(dim=1) / math.sqrt(d)
            # record the value that stops an image too, then freeze it
            trace.append(torch.where(active, sigma, torch.nan).double().cpu())
            # a non-finite residual (a diverging, badly trained net) stops the image, unconverged
            finished |= active & (sigma < sigma_final)
            active &= (sigma >= sigma_final) & torch.isfinite(sigma)
            if not active.any():
                break
            h = h0 * t / (1 + h0 * (t - 1))
            gamma = sigma * math.sqrt(max((1 - beta * h) ** 2 - (1 - h) ** 2, 0.0))
            step = -h * r + gamma[:, None, None, None] * z
            y = y + torch.where(active[:, None, None, None], step, torch.zeros_like(step))
            steps += active.cpu().long()
    return SampleResult(samples=y.double().cpu().numpy(), sigma_trace=torch.stack(trace).numpy(),
                        steps=steps.numpy(), converged=finished.cpu().numpy())


def cosine_similarity(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Cosine similarity of images after removing each image's mean: a (..., C, H, W) and b
    broadcastable; returns (...). The paper's measure of sample-vs-sample agreement."""
    a = as_real("a", a)
    b = as_real("b", b)
    for name, arr in (("a", a), ("b", b)):
        if arr.ndim < 3 or arr.size == 0 or not np.all(np.isfinite(arr)):
            raise ValueError(f"{name} must be a finite, non-empty image array (..., C, H, W), "
                             f"got shape {arr.shape}")
    if a.shape[-3:] != b.shape[-3:]:
        raise ValueError(f"a and b must have the same image shape (C, H, W), got {a.shape} and "
                         f"{b.shape}")
    a = a.reshape(*a.shape[:-3], -1)
    b = b.reshape(*b.shape[:-3], -1)
    a = a - a.mean(-1, keepdims=True)
    b = b - b.mean(-1, keepdims=True)
    na = np.linalg.norm(a, axis=-1)
    nb = np.linalg.norm(b, axis=-1)
    return (a * b).sum(-1) / np.maximum(na * nb, np.finfo(float).tiny)
