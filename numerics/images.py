"""Image data for the generalization / GAHB / image-dimension experiments (THEORY section 8).

Every function returns images as float64 arrays of shape (n, channels, height, width) with
intensities in [0, 1]. Nothing is downloaded: the default real data set is scikit-learn's
bundled 8x8 digits; MNIST (IDX files) and CIFAR-10 (python batches) are read from a folder
the user provides.

Synthetic classes:
- disks (``disk_images``): centre (x, y), radius, foreground and background grey levels, i.e.
  a 5-dimensional manifold; the edge is anti-aliased (linear ramp of one pixel) so that the
  image depends smoothly on the parameters and the manifold dimension is exactly 5.
- C^alpha images (``c_alpha_images``): a horizontal edge whose contour is white noise
  fractionally integrated with ``|omega|^-alpha``, separating two backgrounds that are white
  noise filtered by ``|omega|^-alpha``, followed by a 2x2 box blur.
"""

from __future__ import annotations

import gzip
import os
import pickle
import struct
from pathlib import Path

import numpy as np

from geomem.theory._checks import as_generator, check_choice, show

__all__ = [
    "DATASETS",
    "c_alpha_images",
    "disk_images",
    "disk_images_from_parameters",
    "disk_parameters_from_image",
    "fit_disk",
    "load_cifar10",
    "load_dataset",
    "load_digits_images",
    "load_mnist_idx",
    "write_cifar10_batch",
    "write_mnist_idx",
]

#: data set names understood by ``load_dataset``
DATASETS = ("digits", "disks", "calpha1", "calpha2", "calpha3", "mnist", "cifar10")
#: grey levels of disk images are drawn from this range (kept apart so the edge is visible)
DISK_LEVEL_RANGE = (0.1, 0.9)
#: the smallest contrast |foreground - background| of a disk image
DISK_MIN_CONTRAST = 0.2

_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def _check_size(size: int, name: str = "size", low: int = 4, high: int = 256) -> int:
    if not (isinstance(size, (int, np.integer)) and low <= size <= high):
        raise ValueError(f"{name} out of range: allowed integer {low}..{high}, got {show(size)}")
    return int(size)


def _check_count(n: int) -> int:
    if not (isinstance(n, (int, np.integer)) and n >= 1):
        raise ValueError(f"n out of range: allowed integer >= 1, got {show(n)}")
    return int(n)


# ------------------------------------------------------------------------- real data
def load_digits_images() -> np.ndarray:
    """scikit-learn's bundled handwritten digits: (1797, 1, 8, 8), values 0..16 scaled to [0,1]."""
    from sklearn.datasets import load_digits

    return (load_digits().images.astype(np.float64) / 16.0)[:, None]


def _open_maybe_gzip(path: Path):
    with open(path, "rb") as fh:
        magic = fh.read(2)
    return gzip.open(path, "rb") if magic == b"\x1f\x8b" else open(path, "rb")


def load_mnist_idx(path: str | os.PathLike) -> np.ndarray:
    """Read one IDX file (raw or gzip), e.g. ``train-images-idx3-ubyte``; returns the raw
    array with its stored dtype and shape (images: (n, 28, 28) uint8)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no IDX file at {path}")
    with _open_maybe_gzip(path) as fh:
        data = fh.read()
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in _IDX_DTYPES:
        raise ValueError(f"path {path} is not an IDX file (bad magic number)")
    ndim = data[3]
    shape = struct.unpack(f">{ndim}I", data[4:4 + 4 * ndim])
    dtype = np.dtype(_IDX_DTYPES[data[2]])
    body = np.frombuffer(data, dtype=dtype, offset=4 + 4 * ndim, count=int(np.prod(shape)))
    return body.reshape(shape)


def write_mnist_idx(path: str | os.PathLike, array: np.ndarray) -> Path:
    """Write a uint8 array as an (uncompressed) IDX file; the inverse of ``load_mnist_idx``."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    Path(path).write_bytes(header + array.tobytes())
    return Path(path)


def load_cifar10(directory: str | os.PathLike, grayscale: bool = False) -> np.ndarray:
    """CIFAR-10 python batches (``data_batch_*`` and ``test_batch``) from ``directory``:
    (n, 3, 32, 32) in [0, 1], or (n, 1, 32, 32) luminance when ``grayscale``."""
    directory = Path(directory)
    files = sorted(directory.glob("data_batch_*")) + sorted(directory.glob("test_batch"))
    if not files:
        raise FileNotFoundError(f"no CIFAR-10 batches (data_batch_*, test_batch) in {directory}")
    chunks = []
    for file in files:
        with open(file, "rb") as fh:
            batch = pickle.load(fh, encoding="bytes")
        data = batch[b"data"] if b"data" in batch else batch["data"]
        chunks.append(np.asarray(data, dtype=np.uint8).reshape(-1, 3, 32, 32))
    images = np.concatenate(chunks).astype(np.float64) / 255.0
    if grayscale:
        images = np.tensordot(images, np.array([0.299, 0.587, 0.114]), axes=([1], [0]))[:, None]
    return images


def write_cifar10_batch(path: str | os.PathLike, images_uint8: np.ndarray,
                        labels: np.ndarray | None = None) -> Path:
    """Write (n, 3, 32, 32) uint8 images as one CIFAR-10 python batch (for tests / subsets)."""
    images_uint8 = np.asarray(images_uint8, dtype=np.uint8)
    if images_uint8.ndim != 4 or images_uint8.shape[1:] != (3, 32, 32):
        raise ValueError(f"images_uint8 must have shape (n, 3, 32, 32), got {images_uint8.shape}")
    n = images_uint8.shape[0]
    labels = np.zeros(n, dtype=int) if labels is None else np.asarray(labels)
    batch = {b"data": images_uint8.reshape(n, -1), b"labels": labels.tolist()}
    with open(path, "wb") as fh:
        pickle.dump(batch, fh)
    return Path(path)


# ------------------------------------------------------------------------- disks
def disk_images_from_parameters(params: np.ndarray, size: int) -> np.ndarray:
    """Render disks from parameters (n, 5) = (cx, cy, radius, foreground, background), centre
    and radius in pixels (pixel centres at 0..size-1): (n, 1, size, size).

    Coverage of a pixel is ``clip(radius - distance + 1/2, 0, 1)``, a one-pixel linear ramp,
    so the image is a piecewise-smooth function of all five parameters."""
    params = np.atleast_2d(np.asarray(params, dtype=np.float64))
    if params.shape[1] != 5:
        raise ValueError(f"params must have shape (n, 5), got {params.shape}")
    size = _check_size(size)
    grid = np.arange(size, dtype=np.float64)
    cx, cy, r, fg, bg = (params[:, i, None, None] for i in range(5))
    dist = np.sqrt((grid[None, None, :] - cx) ** 2 + (grid[None, :, None] - cy) ** 2)
    coverage = np.clip(r - dist + 0.5, 0.0, 1.0)
    return (bg + (fg - bg) * coverage)[:, None]


def disk_images(n: int, size: int = 16, rng: np.random.Generator | None = None
                ) -> tuple[np.ndarray, np.ndarray]:
    """n random disk images (n, 1, size, size) and their parameters (n, 5).

    Radius uniform in [size/8, size/4]; centre uniform such that the disk stays inside the
    image; grey levels uniform in ``DISK_LEVEL_RANGE`` with contrast >= ``DISK_MIN_CONTRAST``."""
    n, size = _check_count(n), _check_size(size)
    rng = as_generator("rng", rng)
    r = rng.uniform(size / 8, size / 4, n)
    margin = r + 1.0
    cx = rng.uniform(margin, size - 1 - margin)
    cy = rng.uniform(margin, size - 1 - margin)
    fg = rng.uniform(*DISK_LEVEL_RANGE, n)
    bg = rng.uniform(*DISK_LEVEL_RANGE, n)
    close = np.abs(fg - bg) < DISK_MIN_CONTRAST
    # push too-similar levels apart, staying inside the range (keeps the draw vectorised)
    bg = np.where(close & (fg > 0.5), fg - DISK_MIN_CONTRAST - rng.uniform(0, 0.2, n), bg)
    bg = np.where(close & (fg <= 0.5), fg + DISK_MIN_CONTRAST + rng.uniform(0, 0.2, n), bg)
    params = np.stack([cx, cy, r, fg, bg], axis=1)
    return disk_images_from_parameters(params, size), params


def disk_parameters_from_image(image: np.ndarray) -> np.ndarray:
    """Recover (cx, cy, radius, foreground, background) from one noiseless disk image
    (size, size) or (1, size, size): background = corner pixel, foreground = the pixel value
    farthest from it, centre = coverage-weighted centroid, radius from the covered area."""
    img = np.asarray(image, dtype=np.float64).reshape(image.shape[-2:])
    bg = img[0, 0]
    fg = img.flat[np.argmax(np.abs(img - bg))]
    coverage = (img - bg) / (fg - bg)
    area = coverage.sum()
    ys, xs = np.indices(img.shape)
    return np.array([(coverage * xs).sum() / area, (coverage * ys).sum() / area,
                     np.sqrt(area / np.pi), fg, bg])


def fit_disk(image: np.ndarray) -> tuple[np.ndarray, float]:
    """Least-squares fit of the five disk parameters to one image (size, size) or
    (1, size, size), started from :func:`disk_parameters_from_image`; returns the parameters
    (5,) and the RMS residual per pixel. A noiseless disk fits to rounding; a sample that is
    a disk up to noise of level s leaves a residual near s; a grey texture does not fit."""
    from scipy.optimize import least_squares

    img = np.asarray(image, dtype=np.float64).reshape(image.shape[-2:])
    if img.shape[0] != img.shape[1] or not np.all(np.isfinite(img)):
        raise ValueError(f"image must be a finite square (size, size), got {img.shape}")
    size = img.shape[0]
    low = [-size, -size, 0.1, -1.0, -1.0]
    high = [2.0 * size, 2.0 * size, 2.0 * size, 2.0, 2.0]

    def residual(params: np.ndarray) -> np.ndarray:
        return (disk_images_from_parameters(params[None], size)[0, 0] - img).ravel()

    # two starts: the moment estimate (exact on clean disks) and a noise-robust one
    # (background = median of the border, foreground = mean of the clearly deviating pixels)
    border = np.r_[img[0], img[-1], img[1:-1, 0], img[1:-1, -1]]
    bg = np.median(border)
    dev = img - bg
    far = np.abs(dev) > 0.5 * np.abs(dev).max()
    ys, xs = np.indices(img.shape)
    robust = (np.array([xs[far].mean(), ys[far].mean(), np.sqrt(far.sum() / np.pi),
                        img[far].mean(), bg]) if far.any() else
              np.array([size / 2, size / 2, size / 6, img.max(), img.min()]))
    best = None
    with np.errstate(invalid="ignore", divide="ignore"):
        moments = disk_parameters_from_image(img)
    for start in (moments, robust):
        if not np.all(np.isfinite(start)):
            continue
        start = np.clip(start, np.add(low, 1e-9), np.subtract(high, 1e-9))
        fit = least_squares(residual, start, bounds=(low, high), x_scale="jac")
        if best is None or fit.cost < best.cost:
            best = fit
    return best.x, float(np.sqrt(np.mean(best.fun ** 2)))


# ------------------------------------------------------------------------- C^alpha
def _fractional_filter(shape: tuple[int, ...], alpha: float) -> np.ndarray:
    """``|omega|^-alpha`` on the FFT grid of ``shape`` (zero frequency set to 0)."""
    freqs = np.meshgrid(*[np.fft.fftfreq(s) for s in shape], indexing="ij")
    radius = np.sqrt(sum(f ** 2 for f in freqs))
    filt = np.zeros_like(radius)
    filt[radius > 0] = radius[radius > 0] ** (-alpha)
    return filt


def _filtered_noise(n: int, shape: tuple[int, ...], alpha: float, rng) -> np.ndarray:
    """n white-noise fields of ``shape`` filtered by ``|omega|^-alpha``, each scaled to unit
    range (min 0, max 1)."""
    noise = rng.standard_normal((n, *shape))
    axes = tuple(range(1, len(shape) + 1))
    field = np.real(np.fft.ifftn(np.fft.fftn(noise, axes=axes) * _fractional_filter(shape, alpha),
                                 axes=axes))
    low = field.min(axis=axes, keepdims=True)
    high = field.max(axis=axes, keepdims=True)
    return (field - low) / (high - low)


def c_alpha_images(n: int, size: int = 16, alpha: float = 1.0,
                   rng: np.random.Generator | None = None) -> np.ndarray:
    """n C^alpha images (n, 1, size, size) in [0, 1] (THEORY section 8).

    The images are generated at twice the resolution (so the contour is sampled finely),
    split by the contour ``row < h(column)``, and reduced by a 2x2 box blur + subsampling."""
    n, size = _check_count(n), _check_size(size)
    if not 0.0 < alpha <= 8.0:
        raise ValueError(f"alpha out of range: allowed 0 < alpha <= 8, got {alpha}")
    rng = as_generator("rng", rng)
    fine = 2 * size
    contour = _filtered_noise(n, (fine,), alpha, rng)            # (n, fine) in [0, 1]
    contour = fine * (0.25 + 0.5 * contour)                      # edge between 1/4 and 3/4 height
    back_a = _filtered_noise(n, (fine, fine), alpha, rng)
    back_b = _filtered_noise(n, (fine, fine), alpha, rng)
    rows = np.arange(fine, dtype=np.float64)[None, :, None]
    image = np.where(rows < contour[:, None, :], 0.5 * back_a, 0.5 + 0.5 * back_b)
    blurred = image.reshape(n, size, 2, size, 2).mean(axis=(2, 4))
    return blurred[:, None]


# ------------------------------------------------------------------------- dispatch
def load_dataset(name: str, n: int | None = None, *, size: int = 16, data_dir: str | None = None,
                 rng: np.random.Generator | int | None = 0) -> np.ndarray:
    """Images (n, C, H, W) in [0, 1] of data set ``name`` (one of ``DATASETS``).

    Real data sets return all images (``n`` None) or the first ``n``; synthetic ones draw
    ``n`` images (required) from ``rng``. MNIST/CIFAR-10 need ``data_dir``."""
    check_choice("name", name, DATASETS)
    rng = as_generator("rng", rng)
    if name in ("disks", "calpha1", "calpha2", "calpha3"):
        if n is None:
            raise ValueError(f"n is required for the synthetic data set {name!r}")
        if name == "disks":
            return disk_images(n, size, rng)[0]
        return c_alpha_images(n, size, float(name[-1]), rng)
    if name == "digits":
        images = load_digits_images()
    else:
        if data_dir is None:
            raise ValueError(f"data_dir is required for {name!r} (no downloads at run time)")
        if name == "mnist":
            folder = Path(data_dir)
            files = sorted(folder.glob("*images-idx3-ubyte*"))
            if not files:
                raise FileNotFoundError(f"no '*images-idx3-ubyte*' file in {folder}")
            images = np.concatenate([load_mnist_idx(f) for f in files]).astype(np.float64)
            images = images[:, None] / 255.0
        else:
            images = load_cifar10(data_dir, grayscale=True)
    if n is not None:
        images = images[:_check_count(n)]
    return images
