"""Size effect of the C^alpha MSE slope, seen by the optimal linear denoiser (issue 16).

For C^alpha images of side 8, 16 and 32 (d = 64, 256, 1024) fit the affine Wiener denoiser
(told sigma) on N training images and print the slope of log MSE against log sigma over
``SLOPE_SIGMA_RANGE`` (the range `geomem gahb` fits), with the MSE / identity ratio at the
two smallest sigma. A Wiener filter fitted on N < d images has a rank-deficient covariance:
it projects out every direction the training set does not span, so it is *worse than the
identity* at small sigma and its slope is too flat (side 32 at N = 1000). The rows with
N >> d give the slope of the best linear denoiser at that size.

    python benchmarks/wiener_size_slope.py --alpha 1 --sides 8 16 32 --n-train 1000 3000 6000
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from geomem.numerics.images import load_dataset
from geomem.numerics.linear_denoiser import WienerDenoiser
from geomem.validation.gahb import DEFAULT_SIGMAS, SLOPE_SIGMA_RANGE, fit_log_slope, optimal_rate

N_TEST = 64          # held-out images per side (the gahb default)


def wiener_mse(train: np.ndarray, test: np.ndarray, sigmas, seed: int = 0) -> list[float]:
    """Per-pixel MSE of the Wiener denoiser of ``train`` on noisy ``test``, per sigma."""
    wiener = WienerDenoiser(train)
    gen = np.random.default_rng(seed)
    out = []
    for sigma in sigmas:
        noisy = test + sigma * gen.standard_normal(test.shape)
        denoised = np.asarray(wiener(torch.as_tensor(noisy), sigma))
        out.append(float(np.mean((denoised - test) ** 2)))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--alpha", type=int, default=1, choices=(1, 2, 3))
    parser.add_argument("--sides", type=int, nargs="+", default=[8, 16, 32])
    parser.add_argument("--n-train", type=int, nargs="+", default=[1000, 3000, 6000])
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    sigmas = list(DEFAULT_SIGMAS)
    print(f"alpha = {args.alpha}: optimal slope {optimal_rate(args.alpha):.2f}; fit over sigma in "
          f"{list(SLOPE_SIGMA_RANGE)}")
    print("side  d     N     Wiener slope  MSE/identity at sigma = "
          f"{sigmas[0]:g}, {sigmas[1]:g}")
    for side in args.sides:
        images = load_dataset(f"calpha{args.alpha}", max(args.n_train) + N_TEST, size=side,
                              rng=args.seed)
        test = images[-N_TEST:]
        for n in args.n_train:
            mse = wiener_mse(images[:n], test, sigmas)
            slope = fit_log_slope(sigmas, mse, SLOPE_SIGMA_RANGE)
            print(f"{side:<5d} {side * side:<5d} {n:<5d} {slope:12.3f}  "
                  f"{mse[0] / sigmas[0] ** 2:.2f}, {mse[1] / sigmas[1] ** 2:.2f}", flush=True)


if __name__ == "__main__":
    main()
