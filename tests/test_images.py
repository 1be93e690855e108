"""Image data: loaders round-trip, generators' ranges and manifold dimension."""

import gzip

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from geomem.numerics import images as im

#: disk parameters are recovered to this many pixels / grey levels (one-pixel edge ramp)
PARAM_TOL = np.array([0.1, 0.1, 0.1, 1e-12, 1e-12])


def test_digits_shape_and_range():
    x = im.load_digits_images()
    assert x.shape == (1797, 1, 8, 8)
    assert x.min() == 0.0 and x.max() == 1.0


def test_mnist_idx_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    arr = rng.integers(0, 256, (7, 28, 28), dtype=np.uint8)
    im.write_mnist_idx(tmp_path / "train-images-idx3-ubyte", arr)
    np.testing.assert_array_equal(im.load_mnist_idx(tmp_path / "train-images-idx3-ubyte"), arr)
    raw = (tmp_path / "train-images-idx3-ubyte").read_bytes()
    (tmp_path / "t10k-images-idx3-ubyte.gz").write_bytes(gzip.compress(raw))
    np.testing.assert_array_equal(im.load_mnist_idx(tmp_path / "t10k-images-idx3-ubyte.gz"), arr)
    both = im.load_dataset("mnist", data_dir=tmp_path)
    assert both.shape == (14, 1, 28, 28)
    np.testing.assert_allclose(both[7:, 0] * 255, arr)
    (tmp_path / "bad").write_bytes(b"\x01\x02\x03\x04")
    with pytest.raises(ValueError, match="IDX"):
        im.load_mnist_idx(tmp_path / "bad")


def test_cifar_round_trip(tmp_path):
    rng = np.random.default_rng(1)
    a = rng.integers(0, 256, (3, 3, 32, 32), dtype=np.uint8)
    b = rng.integers(0, 256, (2, 3, 32, 32), dtype=np.uint8)
    im.write_cifar10_batch(tmp_path / "data_batch_1", a)
    im.write_cifar10_batch(tmp_path / "test_batch", b)
    x = im.load_cifar10(tmp_path)
    np.testing.assert_allclose(x * 255, np.concatenate([a, b]), atol=1e-9)
    gray = im.load_dataset("cifar10", data_dir=tmp_path)
    assert gray.shape == (5, 1, 32, 32)
    with pytest.raises(FileNotFoundError):
        im.load_cifar10(tmp_path / "missing")


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 10_000), size=st.sampled_from([16, 24, 32]))
def test_disk_parameters_recoverable(seed, size):
    x, p = im.disk_images(3, size, np.random.default_rng(seed))
    assert x.shape == (3, 1, size, size) and 0 <= x.min() and x.max() <= 1
    for img, params in zip(x, p, strict=True):
        np.testing.assert_array_less(np.abs(im.disk_parameters_from_image(img) - params), PARAM_TOL)


def test_disk_manifold_dimension_is_five():
    """Finite-difference Jacobian of the renderer w.r.t. the 5 parameters has full rank 5, so
    the images form a 5-dimensional manifold; local PCA of nearby images shows 5 directions."""
    _, p = im.disk_images(4, 16, np.random.default_rng(3))
    eps = 1e-4
    for params in p:
        jac = np.stack([(im.disk_images_from_parameters(params + eps * e, 16)
                         - im.disk_images_from_parameters(params - eps * e, 16)).ravel() / (2 * eps)
                        for e in np.eye(5)], axis=1)
        sv = np.linalg.svd(jac, compute_uv=False)
        assert sv[-1] > 1e-2 * sv[0]
        local = im.disk_images_from_parameters(
            params + 1e-5 * np.random.default_rng(0).standard_normal((200, 5)), 16).reshape(200, -1)
        pca = np.linalg.svd(local - local.mean(0), compute_uv=False)
        assert pca[5] < 1e-4 * pca[4]


@pytest.mark.parametrize("alpha", [1.0, 2.0, 3.0])
def test_c_alpha_images_range_and_smoothness(alpha):
    x = im.c_alpha_images(20, 16, alpha, np.random.default_rng(0))
    assert x.shape == (20, 1, 16, 16) and 0 <= x.min() and x.max() <= 1
    assert len(np.unique(x.round(6))) > 100


def test_smoother_c_alpha_has_less_high_frequency_energy():
    spectra = []
    for alpha in (1.0, 3.0):
        x = im.c_alpha_images(50, 16, alpha, np.random.default_rng(0))[:, 0]
        power = np.abs(np.fft.fft2(x - x.mean((1, 2), keepdims=True))) ** 2
        spectra.append(power[:, 4:13, 4:13].sum() / power.sum())
    assert spectra[1] < spectra[0]


def test_bad_input():
    with pytest.raises(ValueError, match="size"):
        im.disk_images(2, 2)
    with pytest.raises(ValueError, match="alpha"):
        im.c_alpha_images(2, 16, -1.0)
    with pytest.raises(ValueError, match="name"):
        im.load_dataset("imagenet")
    with pytest.raises(ValueError, match="data_dir"):
        im.load_dataset("mnist")


@settings(max_examples=10, deadline=None)
@given(seed=st.integers(0, 10_000))
def test_fit_disk_recovers_noiseless_disks_and_reports_the_noise_level(seed):
    from geomem.numerics.images import fit_disk

    x, params = im.disk_images(1, 16, rng=seed)
    fitted, rms = fit_disk(x[0])
    assert rms < 1e-6
    np.testing.assert_allclose(fitted[3:], params[0, 3:], atol=1e-4)
    noisy = x[0] + 0.02 * np.random.default_rng(seed).standard_normal(x[0].shape)
    assert 0.015 < fit_disk(noisy)[1] < 0.022          # the fit cannot absorb white noise


def test_fit_disk_does_not_fit_a_texture():
    from geomem.numerics.images import c_alpha_images, fit_disk

    texture = c_alpha_images(1, 16, 1.0, rng=0)[0]
    assert fit_disk(texture)[1] > 0.05
