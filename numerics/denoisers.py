"""Blind, bias-free denoisers (Kadkhodaie et al.; THEORY section 8).

A denoiser maps a noisy image y (B, C, H, W) to an estimate D(y) of the clean image. The
networks here predict the noise (residual) and return ``D(y) = y - net(y)``. They have no
additive constant anywhere (convolutions without bias, a batch-norm that only divides by a
standard deviation and multiplies by a learned scale, ReLU, average pooling, nearest
upsampling), so in eval mode D is positively homogeneous and piecewise linear:
``D(y) = J_D(y) y`` exactly (up to float rounding). They are *blind*: no noise-level input.

Training lives in :mod:`geomem.numerics.denoiser_training`. ``EmpiricalDenoiser`` is the
exact posterior-mean denoiser of the empirical distribution of a training set with a blind
noise-level estimate: a reference with no training noise (tests).
"""

from __future__ import annotations

import copy
import math

import numpy as np
import torch
from torch import nn

from geomem.theory._checks import check_choice, check_int

__all__ = [
    "ARCHITECTURES",
    "BFCNN",
    "BFUNet",
    "BiasFreeBatchNorm",
    "BlindDenoiser",
    "PADDINGS",
    "EmpiricalDenoiser",
    "build_denoiser",
    "denoiser_jacobian",
    "effective_noise",
]

ARCHITECTURES = ("bfcnn", "unet")
#: convolution padding modes: every one is a linear map of the input, so the network stays
#: bias-free and homogeneous. "zeros" (the default) measured best: a 16x16 C^alpha UNet loses
#: to the linear denoiser mostly on the outer 4-pixel ring at large sigma, but "reflect" and
#: "circular" lose more everywhere (docs/images.md, "The large-sigma gap")
PADDINGS = ("zeros", "reflect", "replicate", "circular")
#: added to the batch variance before the square root (fixed, so eval-mode stays homogeneous)
BN_EPS = 1e-5
#: momentum of the running standard deviation used in eval mode
BN_MOMENTUM = 0.1


class BiasFreeBatchNorm(nn.Module):
    """Scale-only batch norm: ``x / sd_c * gamma_c`` (no mean subtraction, no shift).

    Train mode uses the batch standard deviation over (B, H, W); eval mode a running one."""

    def __init__(self, channels: int):
        super().__init__()
        self.gamma = nn.Parameter(torch.ones(1, channels, 1, 1))
        self.register_buffer("running_sd", torch.ones(1, channels, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            sd = torch.sqrt(x.var(dim=(0, 2, 3), keepdim=True) + BN_EPS)
            with torch.no_grad():
                self.running_sd.mul_(1 - BN_MOMENTUM).add_(sd.detach(), alpha=BN_MOMENTUM)
        else:
            sd = self.running_sd
        return x / sd * self.gamma


def _conv(c_in: int, c_out: int, padding: str = "zeros") -> nn.Conv2d:
    return nn.Conv2d(c_in, c_out, kernel_size=3, padding=1, bias=False, padding_mode=padding)


def _block(c_in: int, c_out: int, padding: str = "zeros") -> nn.Sequential:
    return nn.Sequential(_conv(c_in, c_out, padding), BiasFreeBatchNorm(c_out), nn.ReLU())


class BFCNN(nn.Module):
    """Bias-free CNN (residual predictor): conv-ReLU, ``depth - 2`` x (conv-BN-ReLU), conv."""

    def __init__(self, channels: int = 1, width: int = 32, depth: int = 6,
                 padding: str = "zeros"):
        super().__init__()
        if depth < 3:
            raise ValueError(f"depth out of range: allowed >= 3, got {depth}")
        layers: list[nn.Module] = [_conv(channels, width, padding), nn.ReLU()]
        layers += [_block(width, width, padding) for _ in range(depth - 2)]
        layers.append(_conv(width, channels, padding))
        self.net = nn.Sequential(*layers)

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        return self.net(y)


class BFUNet(nn.Module):
    """Small bias-free UNet (residual predictor): ``levels`` resolutions, channels doubling,
    two conv-BN-ReLU blocks per level, average-pool down, nearest-neighbour up, concatenated
    skips. Image sides must be divisible by ``2**(levels-1)``."""

    def __init__(self, channels: int = 1, width: int = 32, levels: int = 3,
                 padding: str = "zeros"):
        super().__init__()
        if levels < 1:
            raise ValueError(f"levels out of range: allowed >= 1, got {levels}")
        self.levels = levels
        widths = [width * 2 ** i for i in range(levels)]
        self.inc = nn.Sequential(_conv(channels, widths[0], padding), nn.ReLU(),
                                 _block(widths[0], widths[0], padding))
        self.down = nn.ModuleList(nn.Sequential(_block(widths[i - 1], widths[i], padding),
                                                _block(widths[i], widths[i], padding))
                                  for i in range(1, levels))
        self.up = nn.ModuleList(nn.Sequential(
            _block(widths[i] + widths[i - 1], widths[i - 1], padding),
            _block(widths[i - 1], widths[i - 1], padding)) for i in range(levels - 1, 0, -1))
        self.out = _conv(widths[0], channels, padding)

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        factor = 2 ** (self.levels - 1)
        if y.shape[-1] % factor or y.shape[-2] % factor:
            raise ValueError(f"image sides must be divisible by {factor}, got {tuple(y.shape)}")
        skips = [self.inc(y)]
        for block in self.down:
            skips.append(block(nn.functional.avg_pool2d(skips[-1], 2)))
        x = skips.pop()
        for block in self.up:
            x = nn.functional.interpolate(x, scale_factor=2, mode="nearest")
            x = block(torch.cat([x, skips.pop()], dim=1))
        return self.out(x)


class BlindDenoiser(nn.Module):
    """``D(y) = y - net(y)`` for a residual network ``net``; input/output (B, C, H, W)."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        return y - self.net(y)


def build_denoiser(arch: str = "bfcnn", channels: int = 1, width: int = 32, depth: int = 6,
                   levels: int = 3, padding: str = "zeros") -> BlindDenoiser:
    """A blind bias-free denoiser: ``arch`` in ``ARCHITECTURES`` ("bfcnn" uses ``depth``,
    "unet" uses ``levels``), convolutions padded by ``padding`` (``PADDINGS``; "reflect"
    needs every level's side >= 2)."""
    check_choice("arch", arch, ARCHITECTURES)
    check_choice("padding", padding, PADDINGS)
    for name, value, most in (("channels", channels, 64), ("width", width, 4096),
                              ("depth", depth, 256), ("levels", levels, 8)):
        check_int(name, value, minimum=1, maximum=most)  # beyond: no CPU or GPU memory fits
    net = (BFCNN(channels, width, depth, padding) if arch == "bfcnn"
           else BFUNet(channels, width, levels, padding))
    return BlindDenoiser(net)


class EmpiricalDenoiser(nn.Module):
    """Exact posterior mean ``E[x | y]`` for x uniform on the training images X (N, C, H, W)
    and Gaussian noise, with the noise level estimated blindly as the fixed point of
    ``sigma^2 = ||y - D_sigma(y)||^2 / d`` (started at ``||y - mean(X)||^2 / d``).

    Float64 reference; log-space weights (softmax of ``-|y - x|^2 / (2 sigma^2)``)."""

    def __init__(self, images: np.ndarray | torch.Tensor, iterations: int = 20,
                 min_sigma: float = 1e-4):
        super().__init__()
        x = torch.as_tensor(np.asarray(images), dtype=torch.float64)
        if x.ndim != 4:
            raise ValueError(f"images must have shape (N, C, H, W), got {tuple(x.shape)}")
        self.register_buffer("flat", x.reshape(x.shape[0], -1))
        self.iterations, self.min_sigma = iterations, min_sigma

    def posterior_mean(self, y_flat: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        dist2 = torch.cdist(y_flat, self.flat) ** 2                          # (B, N)
        weights = torch.softmax(-dist2 / (2 * sigma[:, None] ** 2), dim=1)
        return weights @ self.flat

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        y_flat = y.reshape(y.shape[0], -1).to(torch.float64)
        d = y_flat.shape[1]
        sigma = ((y_flat - self.flat.mean(0)) ** 2).sum(1).div(d).sqrt().clamp_min(self.min_sigma)
        for _ in range(self.iterations):
            den = self.posterior_mean(y_flat, sigma)
            sigma = ((y_flat - den) ** 2).sum(1).div(d).sqrt().clamp_min(self.min_sigma)
        return self.posterior_mean(y_flat, sigma).reshape(y.shape).to(y.dtype)


def effective_noise(denoiser: nn.Module, y: torch.Tensor) -> torch.Tensor:
    """``||y - D(y)|| / sqrt(d)`` per image (B,): the sampler's blind noise estimate."""
    with torch.no_grad():
        r = (y - denoiser(y)).reshape(y.shape[0], -1)
    return r.norm(dim=1) / math.sqrt(r.shape[1])


def denoiser_jacobian(denoiser: nn.Module, y: torch.Tensor | np.ndarray) -> torch.Tensor:
    """Exact Jacobian ``dD/dy`` at each image of y (B, C, H, W): (B, d, d) float64, d = C H W,
    by reverse-mode autodiff (torch.func.jacrev, vmapped) on a float64 copy of the network.

    For a bias-free denoiser it is symmetric up to training error and ``J y = D(y)``; its
    eigenvalues are the shrinkage factors of the adaptive basis (GAHB). The Tweedie score
    Jacobian is ``(J - I) / sigma^2``."""
    model = copy.deepcopy(denoiser).to(torch.float64).eval()
    y = torch.as_tensor(np.asarray(y) if not torch.is_tensor(y) else y, dtype=torch.float64)
    if y.ndim != 4:
        raise ValueError(f"y must have shape (B, C, H, W), got {tuple(y.shape)}")
    shape = y.shape[1:]

    def flat(v: torch.Tensor) -> torch.Tensor:
        return model(v.reshape(1, *shape)).reshape(-1)

    return torch.func.vmap(torch.func.jacrev(flat))(y.reshape(y.shape[0], -1)).detach()
