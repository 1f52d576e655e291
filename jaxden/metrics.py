"""Full-reference image quality metrics: PSNR and SSIM, per image.

Images have shape (..., H, W, C); each metric reduces the last three axes and returns one
value per image, of shape ``x.shape[:-3]`` (a scalar for one HWC image). Both are pure and
jittable. They reproduce scikit-image (``skimage.metrics``) on the full image, with no
border crop other than SSIM's own.
"""

import chex
import jax
import jax.numpy as jnp
import numpy as np

# SSIM of Wang et al. 2004, with the settings of scikit-image's `gaussian_weights=True`.
_K1, _K2 = 0.01, 0.03
_SIGMA = 1.5
_RADIUS = int(3.5 * _SIGMA + 0.5)  # truncate=3.5 as in skimage, radius as in scipy.ndimage
_WIN_SIZE = 2 * _RADIUS + 1  # 11 taps
SSIM_MIN_SIZE = _WIN_SIZE  # images smaller than this in H or W have no SSIM


def _as_float_pair(x, y) -> tuple[jax.Array, jax.Array]:
    x, y = jnp.asarray(x), jnp.asarray(y)
    chex.assert_equal_shape([x, y])
    chex.assert_axis_dimension_gteq(x, -3, 1)  # rank >= 3: (..., H, W, C)
    dtype = jnp.promote_types(jnp.result_type(x, y), jnp.float32)
    return x.astype(dtype), y.astype(dtype)


def psnr(x: jax.Array, y: jax.Array, data_range=1.0) -> jax.Array:
    """Peak signal-to-noise ratio in dB, 10 log10(data_range^2 / MSE), per image.

    The MSE is the mean over the full image (H, W, C), as scikit-image
    ``peak_signal_noise_ratio(x, y, data_range=data_range)``. Identical images give +inf
    (MSE 0), as scikit-image does.

    Args:
      x, y: images of the same shape (..., H, W, C), e.g. clean and denoised.
      data_range: peak-to-peak range of the images (1.0 for [0, 1]).

    Returns:
      PSNR, shape ``x.shape[:-3]``.
    """
    x, y = _as_float_pair(x, y)
    mse = jnp.mean(jnp.square(x - y), axis=(-3, -2, -1))
    return 10.0 * jnp.log10(data_range**2 / mse)


def _gaussian_taps(dtype) -> jax.Array:
    """The normalised 1-D Gaussian of ``scipy.ndimage.gaussian_filter(sigma=1.5, truncate=3.5)``."""
    t = np.arange(-_RADIUS, _RADIUS + 1)
    w = np.exp(-0.5 * t**2 / _SIGMA**2)
    return jnp.asarray(w / w.sum(), dtype)


def _filter_axis(a: jax.Array, taps: jax.Array, axis: int) -> jax.Array:
    """1-D Gaussian filter along ``axis`` with scipy.ndimage's ``mode='reflect'`` boundary.

    ndimage's 'reflect' (d c b a | a b c d | d c b a) is numpy's 'symmetric' padding.
    """
    n = a.shape[axis]
    pad = [(0, 0)] * a.ndim
    pad[axis] = (_RADIUS, _RADIUS)
    padded = jnp.pad(a, pad, mode="symmetric")
    return sum(
        taps[k] * jax.lax.slice_in_dim(padded, k, k + n, axis=axis) for k in range(_WIN_SIZE)
    )


def ssim(x: jax.Array, y: jax.Array, data_range=1.0) -> jax.Array:
    """Mean structural similarity (Wang et al., IEEE TIP 2004), per image.

    Matches scikit-image ``structural_similarity(x, y, data_range=data_range,
    channel_axis=-1, gaussian_weights=True, sigma=1.5, use_sample_covariance=False)``:
    local statistics under an 11-tap Gaussian window (sigma 1.5, truncate 3.5), separable,
    with scipy.ndimage's 'reflect' boundary; K1 = 0.01, K2 = 0.03; population covariances;
    the SSIM map is cropped by the window radius (5 pixels) on each side of H and W before
    the mean, and the per-channel means are averaged.

    Args:
      x, y: images of the same shape (..., H, W, C), with H, W >= 11.
      data_range: peak-to-peak range of the images (1.0 for [0, 1]).

    Returns:
      SSIM, shape ``x.shape[:-3]``; 1 for identical images.
    """
    x, y = _as_float_pair(x, y)
    chex.assert_axis_dimension_gteq(x, -3, _WIN_SIZE)
    chex.assert_axis_dimension_gteq(x, -2, _WIN_SIZE)
    taps = _gaussian_taps(x.dtype)
    stats = jnp.stack([x, y, x * x, y * y, x * y])
    ux, uy, uxx, uyy, uxy = _filter_axis(_filter_axis(stats, taps, -3), taps, -2)
    vx, vy, vxy = uxx - ux * ux, uyy - uy * uy, uxy - ux * uy
    c1, c2 = (_K1 * data_range) ** 2, (_K2 * data_range) ** 2
    s = ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux**2 + uy**2 + c1) * (vx + vy + c2))
    s = s[..., _RADIUS:-_RADIUS, _RADIUS:-_RADIUS, :]
    return jnp.mean(s, axis=(-3, -2, -1))


# One jitted copy of each for every caller: each jax.jit wrapper compiles on its own.
psnr_jit, ssim_jit = jax.jit(psnr), jax.jit(ssim)
