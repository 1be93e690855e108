"""torch kernels for `geomem.numerics.empirical` (private; CPU or CUDA, float32 or float64).

The same algorithm as the numpy reference (nearest training point as reference, centred
energies, online log-sum-exp over chunks of N, centred covariance), batched over query blocks
and training chunks so the identical code runs on CPU and CUDA.  Results come back as float64
numpy arrays unless ``return_tensor=True`` (then tensors on ``device`` in ``dtype``).
"""

from __future__ import annotations

import numpy as np
import torch

from . import _empirical_common as common
from ._empirical_common import LOG_NEGLIGIBLE_WEIGHT, pad_zeros, stats_from_moments
from .torch_utils import resolve_device

__all__ = ["covariances", "eigvalsh", "gram", "score", "weight_statistics"]

_DTYPES = {"float32": torch.float32, "float64": torch.float64,
           torch.float32: torch.float32, torch.float64: torch.float64}


def _setup(X, Y, device, dtype):
    if dtype not in _DTYPES:
        raise ValueError(f"dtype must be one of float32, float64, got {dtype!r}")
    dev = resolve_device(device)
    dt = _DTYPES[dtype]
    return (torch.as_tensor(X, dtype=dt, device=dev), torch.as_tensor(Y, dtype=dt, device=dev))


def _out(t: torch.Tensor, return_tensor: bool):
    return t if return_tensor else t.detach().cpu().numpy().astype(np.float64)


def _blocks(B: int, N: int, d: int) -> tuple[int, int]:
    block = max(1, common.BLOCK_ELEMENTS // max(N, d * d, 1))
    chunk = max(1, common.BLOCK_ELEMENTS // max(min(block, B) * d, 1))
    return block, chunk


def _nearest(X, Y, a, y_sq):
    block = max(1, common.BLOCK_ELEMENTS // Y.shape[0])
    return torch.cat([torch.argmax(a * (X[s:s + block] @ Y.T) - 0.5 * a * a * y_sq, dim=1)
                      for s in range(0, X.shape[0], block)])


def _centred_pass(X, Y, a, delta, ref, scatter, chunk):
    """Online-softmax pass centred at c = Y[ref]; see _numpy_kernels._centred_pass."""
    B, d = X.shape
    centre = Y[ref]
    x_rel = X - a * centre
    zeros = X.new_zeros(B)
    vmax, Z, S2, T = zeros.clone(), zeros.clone(), zeros.clone(), zeros.clone()
    m1 = X.new_zeros((B, d))
    M2 = X.new_zeros((B, d, d)) if scatter else None
    for s in range(0, Y.shape[0], chunk):
        D = Y[None, s:s + chunk, :] - centre[:, None, :]
        v = (a * torch.einsum("bd,bcd->bc", x_rel, D) - 0.5 * a * a * (D * D).sum(-1)) / delta
        new_max = torch.maximum(vmax, v.max(dim=1).values)
        shift = new_max - vmax
        scale = torch.exp(-shift)
        r = v - new_max[:, None]
        e = torch.where(r < LOG_NEGLIGIBLE_WEIGHT, torch.zeros_like(r), torch.exp(r))
        r = torch.where(e == 0, torch.zeros_like(r), r)
        T = scale * (T - shift * Z) + (e * r).sum(1)
        Z = scale * Z + e.sum(1)
        S2 = scale * scale * S2 + (e * e).sum(1)
        m1 = scale[:, None] * m1 + torch.einsum("bc,bcd->bd", e, D)
        if scatter:
            Dw = D * torch.sqrt(e)[:, :, None]
            M2 = scale[:, None, None] * M2 + Dw.transpose(1, 2) @ Dw
        vmax = new_max
    return Z, S2, T, m1, M2, x_rel


def _stats(Z, S2, T) -> dict[str, np.ndarray]:
    return stats_from_moments(*(t.detach().cpu().numpy().astype(np.float64)
                                for t in (Z, S2, T)))


@torch.no_grad()
def score(X, Y, a, delta, *, device=None, dtype="float64", return_tensor=False):
    """(B, d) empirical score."""
    X, Y = _setup(X, Y, device, dtype)
    if X.shape[0] == 0:
        return _out(X.new_zeros((0, X.shape[1])), return_tensor)
    block, chunk = _blocks(X.shape[0], Y.shape[0], 1)
    ref = _nearest(X, Y, a, (Y * Y).sum(1))
    out = []
    for s in range(0, X.shape[0], block):
        Z, _, _, m1, _, x_rel = _centred_pass(X[s:s + block], Y, a, delta, ref[s:s + block],
                                              False, chunk)
        out.append((a * m1 / Z[:, None] - x_rel) / delta)
    return _out(torch.cat(out), return_tensor)


@torch.no_grad()
def covariances(X, Y, a, delta, *, device=None, dtype="float64", return_tensor=False):
    """(B, d, d) C_w (tensor when return_tensor) and float64 weight statistics."""
    X, Y = _setup(X, Y, device, dtype)
    d = X.shape[1]
    block, chunk = _blocks(X.shape[0], Y.shape[0], d)
    ref = _nearest(X, Y, a, (Y * Y).sum(1))
    Cs, stats = [], []
    for s in range(0, X.shape[0], block):
        Z, S2, T, m1, M2, _ = _centred_pass(X[s:s + block], Y, a, delta, ref[s:s + block],
                                            True, chunk)
        mean = m1 / Z[:, None]
        C = M2 / Z[:, None, None] - mean[:, :, None] * mean[:, None, :]
        Cs.append(0.5 * (C + C.transpose(1, 2)))
        stats.append(_stats(Z, S2, T))
    merged = {k: np.concatenate([st[k] for st in stats]) for k in stats[0]}
    return _out(torch.cat(Cs), return_tensor), merged


def eigvalsh(C) -> np.ndarray:
    """Batched eigenvalues (ascending) on C's device, returned as float64 numpy."""
    if isinstance(C, np.ndarray):
        return np.linalg.eigvalsh(C)
    return torch.linalg.eigvalsh(C).cpu().numpy().astype(np.float64)


@torch.no_grad()
def weight_statistics(X, Y, a, delta, bases, *, device=None, dtype="float64",
                      return_tensor=False):
    """Fields of `WeightStatistics` with expanded-form logits (as the numpy backend)."""
    X, Y = _setup(X, Y, device, dtype)
    y_sq = (Y * Y).sum(1)
    Ps = [torch.as_tensor(P, dtype=X.dtype, device=X.device) for P in bases or []]
    proj_sq = torch.stack([((Y @ P) ** 2).sum(1) for P in Ps], 1) if Ps else None
    block = max(1, common.BLOCK_ELEMENTS // Y.shape[0])
    parts: dict[str, list] = {k: [] for k in ("sum_w2", "entropy", "max_weight", "wsq", "msq")}
    for s in range(0, X.shape[0], block):
        u = a * (X[s:s + block] @ Y.T) - 0.5 * a * a * y_sq
        logits = (u - u.max(dim=1, keepdim=True).values) / delta
        log_z = torch.logsumexp(logits, dim=1)
        w = torch.exp(logits - log_z[:, None])
        parts["sum_w2"].append((w * w).sum(1))
        parts["entropy"].append(-(w * torch.where(w > 0, logits - log_z[:, None],
                                                 torch.zeros_like(w))).sum(1))
        parts["max_weight"].append(torch.exp(-log_z))
        if Ps:
            parts["wsq"].append(w @ proj_sq)
            ybar = w @ Y
            parts["msq"].append(torch.stack([((ybar @ P) ** 2).sum(1) for P in Ps], 1))
    fields = {k: _out(torch.cat(parts[k]), return_tensor)
              for k in ("sum_w2", "entropy", "max_weight")}
    fields["participation_ratio"] = 1.0 / fields["sum_w2"]
    fields["weighted_sq_norm"] = _out(torch.cat(parts["wsq"]), return_tensor) if Ps else None
    fields["mean_sq_norm"] = _out(torch.cat(parts["msq"]), return_tensor) if Ps else None
    return fields


@torch.no_grad()
def gram(X, Y, a, delta, k_max, bases, *, device=None, dtype="float64", return_tensor=False):
    """Gram path: eigenvalues of C_w (padded with zeros to d) from k_max x k_max matrices."""
    Xt, Yt = _setup(X, Y, device, dtype)
    B, d = Xt.shape
    N = Yt.shape[0]
    k_max = min(k_max, N)
    y_sq = (Yt * Yt).sum(1)
    block = max(1, min(common.BLOCK_ELEMENTS // N, common.BLOCK_ELEMENTS // max(k_max * d, 1)))
    Ps = [torch.as_tensor(P, dtype=Xt.dtype, device=Xt.device) for P in bases or []]
    lams, stats, traces = [], [], []
    for s in range(0, B, block):
        x = Xt[s:s + block]
        u = a * (x @ Yt.T) - 0.5 * a * a * y_sq
        top = torch.topk(u, k_max, dim=1).indices                        # (b, K), top[:,0] max
        centre = Yt[top[:, 0]]
        D = Yt[top] - centre[:, None, :]
        x_rel = x - a * centre
        v = (a * torch.einsum("bd,bkd->bk", x_rel, D) - 0.5 * a * a * (D * D).sum(-1)) / delta
        v = v - v.max(dim=1, keepdim=True).values
        e = torch.exp(v)
        Z = e.sum(1)
        w = e / Z[:, None]
        mean = torch.einsum("bk,bkd->bd", w, D)
        Zc = (D - mean[:, None, :]) * torch.sqrt(w)[:, :, None]
        lam = torch.linalg.eigvalsh(Zc @ Zc.transpose(1, 2))
        lams.append(lam.cpu().numpy().astype(np.float64))
        T = (e * torch.where(e > 0, v, torch.zeros_like(v))).sum(1)
        stats.append(_stats(Z, (e * e).sum(1), T))
        if Ps:
            traces.append(torch.stack([((Zc @ P) ** 2).sum((1, 2)) for P in Ps], 1)
                          .cpu().numpy().astype(np.float64))
    lam = pad_zeros(np.concatenate(lams), d)
    merged = {k: np.concatenate([st[k] for st in stats]) for k in stats[0]}
    return lam, merged, (np.concatenate(traces) if Ps else None)
