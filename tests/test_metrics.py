"""Tests for jaxden.metrics against scikit-image on real images (skimage.data).

Each case stacks the pairs (clean, noisy), (clean, clipped noisy) and (noisy, clipped noisy)
into one batch, so that a single jitted call per image shape covers them all, and compares
each image of the batch with scikit-image run on it alone, in float64 on the same float32
values. The float32 path must be within float32 rounding; the float64 path (x64 enabled)
shows that the definitions agree to rounding.
"""

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from skimage import data
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from jaxden import metrics

SK_SSIM = functools.partial(
    structural_similarity,
    data_range=1.0,
    channel_axis=-1,
    gaussian_weights=True,
    sigma=1.5,
    use_sample_covariance=False,
)
SK_PSNR = functools.partial(peak_signal_noise_ratio, data_range=1.0)
PSNR_ATOL_DB = 1e-4
SSIM_ATOL = 1e-5

_psnr = jax.jit(metrics.psnr)
_ssim = jax.jit(metrics.ssim)


def _real(name: str) -> np.ndarray:
    image = getattr(data, name)() / 255.0
    return image[..., None] if image.ndim == 2 else image


def _reference(fn, xs, ys) -> np.ndarray:
    """scikit-image's metric, one image at a time, in float64."""
    return np.array([fn(x, y) for x, y in zip(xs.astype(np.float64), ys.astype(np.float64))])


@pytest.fixture(scope="module", params=["camera", "astronaut"])
def case(request):
    """Batches (3, H, W, C) of float32 pairs from a real grayscale or RGB photo, and the
    scikit-image PSNR and SSIM of each pair: (clean, noisy), (clean, clipped noisy),
    (noisy, clipped noisy), sigma 25/255."""
    clean = _real(request.param).astype(np.float32)
    noisy = clean + np.float32(25 / 255) * np.random.default_rng(0).standard_normal(
        clean.shape, np.float32
    )
    clipped = np.clip(noisy, 0.0, 1.0)
    xs, ys = np.stack([clean, clean, noisy]), np.stack([noisy, clipped, clipped])
    return xs, ys, _reference(SK_PSNR, xs, ys), _reference(SK_SSIM, xs, ys)


def test_float32_matches_skimage(case):
    xs, ys, ref_psnr, ref_ssim = case
    np.testing.assert_allclose(_psnr(xs, ys), ref_psnr, rtol=0, atol=PSNR_ATOL_DB)
    np.testing.assert_allclose(_ssim(xs, ys), ref_ssim, rtol=0, atol=SSIM_ATOL)


def test_float64_matches_skimage_exactly(case):
    xs, ys, ref_psnr, ref_ssim = case
    with jax.enable_x64(True):
        xs, ys = xs.astype(np.float64), ys.astype(np.float64)
        p, s = _psnr(xs, ys), _ssim(xs, ys)
        assert p.dtype == s.dtype == jnp.float64
    np.testing.assert_allclose(p, ref_psnr, rtol=0, atol=1e-10)
    np.testing.assert_allclose(s, ref_ssim, rtol=0, atol=1e-12)


def test_batch_of_photos_with_two_batch_axes():
    """(2, 4, H, W, 3): four RGB photos, against their noisy versions and clipped versions."""
    crops = np.stack([_real(n)[:256, :256] for n in ["astronaut", "coffee", "chelsea", "rocket"]])
    noisy = crops + 25 / 255 * np.random.default_rng(1).standard_normal(crops.shape)
    xs = np.stack([crops, crops]).astype(np.float32)
    ys = np.stack([noisy, np.clip(noisy, 0, 1)]).astype(np.float32)
    p, s = _psnr(xs, ys), _ssim(xs, ys)
    assert p.shape == s.shape == (2, 4)
    xs, ys = xs.reshape(8, 256, 256, 3), ys.reshape(8, 256, 256, 3)
    np.testing.assert_allclose(p.ravel(), _reference(SK_PSNR, xs, ys), rtol=0, atol=PSNR_ATOL_DB)
    np.testing.assert_allclose(s.ravel(), _reference(SK_SSIM, xs, ys), rtol=0, atol=SSIM_ATOL)


def test_identical_images(case):
    """PSNR of identical images is +inf (MSE 0, as scikit-image); SSIM is 1."""
    xs = case[0]
    np.testing.assert_array_equal(_psnr(xs, xs), np.inf)
    np.testing.assert_allclose(_ssim(xs, xs), 1.0, rtol=0, atol=1e-6)


def test_data_range_and_single_image():
    """A single HWC image gives a scalar; data_range=255 on [0, 255] images as skimage."""
    x = data.camera()[200:264, 200:264, None].astype(np.float32)
    y = np.clip(x + 25 * np.random.default_rng(2).standard_normal(x.shape, np.float32), 0, 255)
    p, s = _psnr(x, y, data_range=255.0), _ssim(x, y, data_range=255.0)
    assert p.shape == s.shape == ()
    x, y = x.astype(np.float64), y.astype(np.float64)
    np.testing.assert_allclose(p, SK_PSNR(x, y, data_range=255.0), rtol=0, atol=PSNR_ATOL_DB)
    np.testing.assert_allclose(s, SK_SSIM(x, y, data_range=255.0), rtol=0, atol=SSIM_ATOL)


def test_shape_checks():
    with pytest.raises(AssertionError):
        metrics.psnr(jnp.zeros((16, 16, 1)), jnp.zeros((16, 16, 3)))
    with pytest.raises(AssertionError):
        metrics.ssim(jnp.zeros((16, 16)), jnp.zeros((16, 16)))  # no channel axis
    with pytest.raises(AssertionError):
        metrics.ssim(jnp.zeros((10, 16, 1)), jnp.zeros((10, 16, 1)))  # smaller than the window
    chex.assert_shape(metrics.psnr(jnp.zeros((2, 16, 16, 1)), jnp.ones((2, 16, 16, 1))), (2,))
