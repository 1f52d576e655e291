"""Tests for jaxden.noise: moments, per-image levels, seeding, blind sampling, validation.

Statistical checks use a fixed key and tolerances of 5 standard errors for the sample size,
so they are deterministic and far from flaky.
"""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats

from jaxden import noise

SHAPE = (8, 128, 128, 3)  # one shape for the whole file: each jitted function compiles once
_gaussian = jax.jit(noise.gaussian)
_gaussian_blind = jax.jit(noise.gaussian_blind)


@pytest.fixture(scope="module")
def x():
    return jnp.asarray(np.random.default_rng(0).uniform(size=SHAPE), jnp.float32)


def test_scalar_sigma_moments_and_no_clipping(x):
    sigma = 25 / 255
    y = _gaussian(jax.random.key(0), x, sigma)
    assert y.shape == x.shape and y.dtype == x.dtype
    n = np.asarray(y - x, np.float64)
    size = n.size
    assert abs(n.mean()) < 5 * sigma / np.sqrt(size)
    assert abs(n.std() - sigma) < 5 * sigma / np.sqrt(2 * size)  # std error of a std
    assert float(y.min()) < 0 and float(y.max()) > 1  # AWGN is not clipped


def test_per_image_sigma_is_honoured(x):
    sigma = jnp.linspace(0.0, 0.2, SHAPE[0])
    n = np.asarray(_gaussian(jax.random.key(1), x, sigma) - x, np.float64)
    np.testing.assert_array_equal(n[0], 0.0)
    size = n[0].size
    for s, row in zip(np.asarray(sigma)[1:], n[1:]):
        assert abs(row.mean()) < 5 * s / np.sqrt(size)
        assert abs(row.std() - s) < 5 * s / np.sqrt(2 * size)


def test_seeding_and_jit(x):
    sigma = jnp.full(SHAPE[0], 0.1)
    a = _gaussian(jax.random.key(2), x, sigma)
    chex.assert_trees_all_equal(a, _gaussian(jax.random.key(2), x, sigma))
    chex.assert_trees_all_close(a, noise.gaussian(jax.random.key(2), x, sigma), atol=1e-7)
    b = _gaussian(jax.random.key(3), x, sigma)
    assert float(jnp.mean(a != b)) > 0.99


@pytest.mark.parametrize(
    "images, sigma",
    [
        (SHAPE, np.zeros(3)),  # batch of 8, 3 levels
        (SHAPE, np.zeros((8, 1))),  # not broadcast-compatible with the batch shape
        (SHAPE[1:], np.zeros(1)),  # one image has no batch axis
    ],
)
def test_wrong_sigma_shape_raises(images, sigma):
    x = jnp.zeros(images)
    with pytest.raises(ValueError, match="sigma must be a scalar"):
        noise.gaussian(jax.random.key(0), x, sigma)
    with pytest.raises(ValueError, match="sigma must be a scalar"):
        _gaussian(jax.random.key(0), x, sigma)


def test_integer_images_rejected():
    with pytest.raises(AssertionError):
        noise.gaussian(jax.random.key(0), jnp.zeros((4, 4, 1), jnp.uint8), 0.1)


def test_sample_sigma_uniform_in_range():
    lo, hi, size = 0.0, 55 / 255, 20_000
    s = np.asarray(noise.sample_sigma(jax.random.key(4), size, lo, hi))
    assert s.shape == (size,)
    assert s.min() >= lo and s.max() <= hi
    assert scipy.stats.kstest(s, scipy.stats.uniform(lo, hi - lo).cdf).pvalue > 1e-3


def test_gaussian_blind(x):
    lo, hi = 5 / 255, 55 / 255
    y, sigma = _gaussian_blind(jax.random.key(5), x, lo, hi)
    assert y.shape == x.shape and sigma.shape == (SHAPE[0],)
    assert float(sigma.min()) >= lo and float(sigma.max()) <= hi
    n = np.asarray(y - x, np.float64)
    size = n[0].size
    for s, row in zip(np.asarray(sigma), n):
        assert abs(row.std() - s) < 5 * s / np.sqrt(2 * size)
    y2, sigma2 = _gaussian_blind(jax.random.key(5), x, lo, hi)
    chex.assert_trees_all_equal((y, sigma), (y2, sigma2))
    with pytest.raises(AssertionError):
        noise.gaussian_blind(jax.random.key(5), x[0], lo, hi)
