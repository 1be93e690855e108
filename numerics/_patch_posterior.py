"""Blocked posterior moments over a large pool of training patches (the ELS model's kernel).

For R query patches ``y_r`` (R, K), per-row inverse temperatures ``s_r = 1 / (2 sigma_r^2)``
and M training patches ``q_m`` (M, K) with values ``v_m`` (M, V), computes

    sum_m w_rm v_m,   w_rm = softmax_m(-s_r |y_r - q_m|^2)            -> (R, V)

without the autograd graph, in float64. Two things make it fast where the differentiable
streaming sum of `analytic_denoisers` is slow (60 s for 32 16 x 16 images against 1000
training images, all in memory passes over a (B, HW, M) logit array):

- ``-s_r |y_r - q_m|^2 = 2 s_r y_r . q_m - s_r |q_m|^2 - s_r |y_r|^2``; the last term is
  constant along m and drops out of the softmax, the first two are one matrix product of
  ``[2 s_r y_r, -s_r]`` (R, K + 1) with ``[q_m, |q_m|^2]`` (K + 1, M);
- the logits are made in blocks of ``ROW_BLOCK`` rows x one chunk of patches, sized to stay in
  cache, and reduced in place (max, exp, one product with ``[1, v_m]``) before the next block.

``patch_moments(..., covariance=True)`` also returns the weighted means of the patches and of
``v_m q_m^T``, from which the ELS Jacobian is the posterior covariance
``dD/dy_patch = (E[v q^T] - E[v] E[q]^T) / sigma^2`` (closed form; the tests check it
against autodiff of the differentiable route).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import torch

__all__ = ["PATCH_BLOCK", "ROW_BLOCK", "patch_moments", "scatter_patch_jacobian"]

#: query rows per logit block: with the patch chunk sized to PATCH_BLOCK this keeps a block at
#: 2 MiB of float64, in a core's cache, while the products stay large enough for BLAS
ROW_BLOCK = 128
#: training patches per chunk (rounded to whole images by the caller's chunk iterator)
PATCH_BLOCK = 2048


def patch_moments(queries: torch.Tensor, inverse_temperature: torch.Tensor,
                  chunks: Callable[[int], Iterator[tuple[torch.Tensor, torch.Tensor]]],
                  *, covariance: bool = False) -> dict[str, torch.Tensor]:
    """Softmax-weighted means over every training patch, for every query row.

    queries              (R, K)  noisy patches
    inverse_temperature  (R,)    ``1 / (2 sigma_r^2)``
    chunks(patch_block)  yields (patches (M_j, K), values (M_j, V)) chunks of about
                         ``patch_block`` training patches each, covering the pool once
    Returns ``{"value": (R, V)}``, plus ``"patch": (R, K)`` and ``"value_patch": (R, V, K)``
    when ``covariance``.
    """
    with torch.no_grad():
        n_rows, k = queries.shape
        s = inverse_temperature.to(queries.dtype)
        left = torch.cat([queries * (2 * s)[:, None], -s[:, None]], 1)      # (R, K + 1)
        log_max = torch.full((n_rows,), -torch.inf, dtype=queries.dtype,
                             device=queries.device)
        acc: torch.Tensor | None = None
        for patches, values in chunks(PATCH_BLOCK):
            right = torch.cat([patches, (patches * patches).sum(1, keepdim=True)], 1).T
            columns = [torch.ones_like(values[:, :1]), values]
            if covariance:
                columns += [patches, (values[:, :, None] * patches[:, None, :]).flatten(1)]
            table = torch.cat(columns, 1)                                    # (M_j, 1 + ...)
            if acc is None:
                acc = torch.zeros(n_rows, table.shape[1], dtype=queries.dtype,
                                  device=queries.device)
            for r0 in range(0, n_rows, ROW_BLOCK):
                block = slice(r0, r0 + ROW_BLOCK)
                logits = left[block] @ right                                 # (rows, M_j)
                new_max = torch.maximum(log_max[block], logits.amax(1))
                logits.sub_(new_max[:, None]).exp_()
                # rows seen for the first time have log_max = -inf: their scale is 0
                acc[block] = acc[block] * torch.exp(log_max[block] - new_max)[:, None] \
                    + logits @ table
                log_max[block] = new_max
        assert acc is not None, "the patch pool is empty"
        mean = acc[:, 1:] / acc[:, :1]
        if not covariance:
            return {"value": mean}
        v = (mean.shape[1] - k) // (k + 1)
        return {"value": mean[:, :v], "patch": mean[:, v:v + k],
                "value_patch": mean[:, v + k:].reshape(n_rows, v, k)}


def scatter_patch_jacobian(local: torch.Tensor, source: torch.Tensor) -> torch.Tensor:
    """Dense Jacobians (B, d, d), d = C H W, from per-pixel patch Jacobians.

    local   (B, HW, C, K)  d(output pixel p, channel c) / d(entry k of the patch around p)
    source  (HW, K)        the flattened input pixel of entry k of the patch around p
    Entries that land on the same input pixel (a patch wrapping onto itself) are summed."""
    b, hw, c, k = local.shape
    d = c * hw
    rows = (torch.arange(c, device=local.device)[None, :, None] * hw
            + torch.arange(hw, device=local.device)[:, None, None])              # (HW, C, 1)
    flat = (rows * d + source[:, None, :]).expand(hw, c, k).reshape(-1)
    jac = torch.zeros(b, d * d, dtype=local.dtype, device=local.device)
    jac.index_add_(1, flat, local.reshape(b, -1))
    return jac.reshape(b, d, d)
