"""Seeded noise models for denoising experiments.

Images are in [0, 1] with shape (..., H, W, C), and every noise level is on that [0, 1]
scale: sigma = 25 / 255 is "sigma 25" on the 8-bit scale used in papers and in our configs.

Only additive white Gaussian noise (AWGN), y = x + sigma * n with n ~ N(0, I), the
observation model of the denoising literature, e.g. Zhang et al., "Beyond a Gaussian
Denoiser: Residual Learning of Deep CNN for Image Denoising" (DnCNN), IEEE TIP 2017.
All functions are pure and jittable; the same key gives the same noise.
"""

import chex
import jax
import jax.numpy as jnp


def gaussian(key: jax.Array, x: jax.Array, sigma) -> jax.Array:
    """Additive white Gaussian noise: y = x + sigma * N(0, 1), i.i.d. per pixel and channel.

    The result is not clipped to [0, 1]: the AWGN model, as in DnCNN (Zhang et al. 2017),
    is the unclipped sum. Clip it yourself (``jnp.clip(y, 0, 1)``) to simulate a saturated
    8-bit capture.

    Args:
      key: PRNG key.
      x: clean images in [0, 1], float, shape (..., H, W, C).
      sigma: noise standard deviation on the [0, 1] scale (25 / 255 for "sigma 25");
        a scalar, or one value per image: an array of shape ``x.shape[:-3]``, e.g. (B,)
        for x of shape (B, H, W, C), broadcast over H, W and C.

    Returns:
      y, same shape and dtype as x.

    Raises:
      ValueError: if sigma is neither a scalar nor of shape ``x.shape[:-3]``.
    """
    x = jnp.asarray(x)
    chex.assert_axis_dimension_gteq(x, -3, 1)  # rank >= 3: (..., H, W, C)
    chex.assert_type(x, float)
    sigma = jnp.asarray(sigma, x.dtype)
    if sigma.shape not in ((), x.shape[:-3]):
        raise ValueError(
            f"sigma must be a scalar or have shape x.shape[:-3] = {x.shape[:-3]} "
            f"(one per image), got shape {sigma.shape} for x of shape {x.shape}."
        )
    noise = jax.random.normal(key, x.shape, x.dtype)
    return x + sigma[..., None, None, None] * noise


def sample_sigma(key: jax.Array, batch_size: int, sigma_min, sigma_max) -> jax.Array:
    """Per-sample noise levels, uniform in [sigma_min, sigma_max], shape (batch_size,).

    The "blind" training range of DnCNN-B (Zhang et al. 2017 used sigma in [0, 55] on the
    8-bit scale, i.e. ``sample_sigma(key, B, 0.0, 55 / 255)`` here). Levels on the [0, 1]
    scale.
    """
    return jax.random.uniform(key, (batch_size,), minval=sigma_min, maxval=sigma_max)


def gaussian_blind(
    key: jax.Array, x: jax.Array, sigma_min, sigma_max
) -> tuple[jax.Array, jax.Array]:
    """Blind AWGN (DnCNN-B, Zhang et al. 2017): a fresh sigma per image, then ``gaussian``.

    Args:
      key: PRNG key, split into one key for the levels and one for the noise.
      x: clean images in [0, 1], float, shape (B, H, W, C).
      sigma_min, sigma_max: range of the uniform noise level, on the [0, 1] scale.

    Returns:
      (y, sigma): noisy images (unclipped), shape (B, H, W, C), and the levels used,
      shape (B,).
    """
    x = jnp.asarray(x)
    chex.assert_rank(x, 4)
    key_sigma, key_noise = jax.random.split(key)
    sigma = sample_sigma(key_sigma, x.shape[0], sigma_min, sigma_max)
    return gaussian(key_noise, x, sigma), sigma
