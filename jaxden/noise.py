"""Seeded noise models for denoising experiments.

Images are in [0, 1] with shape (..., H, W, C), and every noise level is on that [0, 1]
scale: sigma = 25 / 255 is "sigma 25" on the 8-bit scale used in papers and in our configs.
C may be 1 (grayscale), 3 (RGB) or many bands (e.g. 31 for CAVE/ICVL hyperspectral data).

Two families:

* Additive white Gaussian noise (AWGN), y = x + sigma * n with n ~ N(0, I), the observation
  model of the denoising literature, e.g. Zhang et al., "Beyond a Gaussian Denoiser: Residual
  Learning of Deep CNN for Image Denoising" (DnCNN), IEEE TIP 2017: ``gaussian``,
  ``sample_sigma``, ``gaussian_blind``.
* Heterogeneous noise after the generators (``lib.py``) of Rui et al., "A Data-driven Loss
  Weighting Scheme across Heterogeneous Tasks for Image Denoising" (DLW), arXiv 2301.06081,
  repository xyrui/DLWnet, with the authors' parameter ranges as defaults:
  ``gaussian_per_image`` (their "iid1"), ``gaussian_per_channel`` ("iid2"),
  ``non_iid_gaussian`` ("non"), ``impulse`` (the bare salt-and-pepper or random-valued
  corruption), ``gaussian_impulse`` (their training noise "impluse" [sic]), ``stripe``,
  ``deadline`` and ``mixed`` (the "mix" test case of the CVPR 2021 predecessor, HWnet).
  ``NOISE_TYPES`` maps names to these and ``sample_noise`` draws a noise type per image, so
  a config can list its noise mix by name.

All functions are pure and jittable; the same key gives the same noise, and the images of a
batch (any leading axes) get independent noise. Nothing is clipped. Arguments that fix array
shapes or pick code paths (``num_channels``, ``column_fraction``, ``kind``, ``normalize``,
``return_info``, the ``kinds`` of ``sample_noise``) must be static under ``jax.jit``: bind
them with ``functools.partial`` or ``static_argnames``.

The heterogeneous generators take ``return_info=True`` to return ``(y, info)`` where
``info["sigma"]`` (shape of x) is the standard deviation of the Gaussian part per pixel and
``info["mask"]`` (bool, shape of x) marks the pixels that do not follow it (impulses,
stripe columns, dead columns): what a hand-made weighting such as
``(1 - mask) / sigma**2`` needs.

Deviations from the authors' ``lib.py`` (all documented where they apply):

* Salt-and-pepper sets salt to 1 and pepper to 0. The authors call
  ``skimage.util.random_noise(mode="s&p", clip=False)`` on already noisy bands, whose minimum
  is below 0, so skimage sets their pepper to -1; we keep the [0, 1] image range instead.
* Corrupted channels: the authors corrupt 10 of 31 bands; for any C we corrupt
  ``max(1, round(10 * C / 31))`` channels (10 of 31, 1 of 3, 1 of 1), or ``num_channels``.
* Column counts are uniform integers in [ceil(0.05 W), floor(0.2 W)] (at least 1) where the
  authors draw ``randint(int(0.05 W), int(0.2 W))``, which excludes its upper end.
* The non-i.i.d. bump centre is drawn in rows for the row and in columns for the column (the
  authors swap H and W, which only matters for non-square patches).
* ``mixed`` is not in ``lib.py``; it follows the "mix" case of the CVPR 2021 test data (half
  the bands per-band i.i.d., half spatially varying, then stripe, deadline and impulse on
  10 bands each) but with the ``lib.py`` ranges ([10, 70] / 255 and a [5, 75] / 255 map)
  where that MATLAB script used {11..70} / 255 and a [10, 70] / 255 map.
"""

import functools
import math
from collections.abc import Callable, Mapping

import chex
import jax
import jax.numpy as jnp
import numpy as np

from jaxden.sharding import sharded_like


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


# ---------------------------------------------------------------------------------------
# Heterogeneous noise (DLW, Rui et al., arXiv 2301.06081; generators of xyrui/DLWnet lib.py)
# ---------------------------------------------------------------------------------------

#: Defaults of the authors' generators, on the [0, 1] scale.
PAPER_SIGMA_RANGE = (10 / 255, 70 / 255)  # "iid1", "iid2" and the Gaussian part of the rest
PAPER_NON_IID_SIGMA_RANGE = (5 / 255, 75 / 255)  # "non": range of the sigma map
PAPER_SCALE_RANGE = (16.0, 64.0)  # "non": bump scale in pixels, U[32 / 2, 128 / 2]
PAPER_AMOUNT_RANGE = (0.1, 0.5)  # impulse: fraction of hit pixels per corrupted band
PAPER_COLUMN_FRACTION = (0.05, 0.2)  # stripe / deadline: fraction of columns per band
PAPER_STRIPE_SHIFT = 0.25  # stripe: column offsets U[-0.25, 0.25]
PAPER_CHANNEL_FRACTION = 10 / 31  # 10 corrupted bands of 31

def num_corrupted_channels(num_channels, channels: int) -> int:
    """How many of ``channels`` channels a sparse corruption hits, as a Python int.

    ``num_channels`` is ``"paper"`` (``max(1, round(10 * C / 31))``: the authors' 10 of 31
    bands, 1 of 3 for RGB, 1 of 1 for grayscale), ``"all"`` (C), or an int in [0, C].
    """
    if isinstance(num_channels, str):
        if num_channels == "paper":
            return max(1, round(PAPER_CHANNEL_FRACTION * channels))
        if num_channels == "all":
            return channels
    elif isinstance(num_channels, (int, np.integer)) and not isinstance(num_channels, bool):
        if 0 <= num_channels <= channels:
            return int(num_channels)
        raise ValueError(
            f"num_channels={num_channels} is out of range for an image with {channels} "
            f"channels: use an int in [0, {channels}], 'paper' or 'all'."
        )
    raise ValueError(
        f"num_channels must be 'paper', 'all' or a Python int (static under jax.jit: bind "
        f"it with functools.partial), got {num_channels!r}."
    )


def _check_images(x, name: str = "x") -> jax.Array:
    x = jnp.asarray(x)
    if x.ndim < 3:
        raise ValueError(
            f"{name} must have shape (..., H, W, C), rank >= 3, got shape {x.shape}; add a "
            f"channel axis for grayscale, e.g. {name}[..., None]."
        )
    if not jnp.issubdtype(x.dtype, jnp.floating):
        raise ValueError(
            f"{name} must be a float array with values in [0, 1], got dtype {x.dtype}; "
            f"convert 8-bit images with {name}.astype(jnp.float32) / 255."
        )
    if 0 in x.shape[-3:]:
        raise ValueError(f"{name} has an empty H, W or C axis: shape {x.shape}.")
    return x


def _concrete(value):
    """The value as a NumPy array, or None under tracing (no checks on traced values)."""
    try:
        return np.asarray(value, np.float64)
    except (jax.errors.TracerArrayConversionError, jax.errors.ConcretizationTypeError):
        return None


def _check_range(name: str, value, lower: float = 0.0, upper: float = np.inf):
    """A (low, high) pair with lower <= low <= high <= upper, checked when concrete."""
    try:
        ok = len(value) == 2 and all(jnp.ndim(v) == 0 for v in value)
    except TypeError:
        ok = False
    if not ok:
        raise ValueError(f"{name} must be a pair of scalars (low, high), got {value!r}.")
    v = _concrete(value)
    if v is not None and not (lower <= v[0] <= v[1] <= upper):
        raise ValueError(
            f"{name} must satisfy {lower} <= low <= high <= {upper}, got {tuple(v)}; note "
            f"that levels are on the [0, 1] scale (write 25 / 255 for sigma 25)."
        )
    return value[0], value[1]


def _column_bounds(column_fraction, width: int) -> tuple[int, int]:
    """Static [min, max] number of corrupted columns for ``column_fraction`` = (lo, hi)."""
    try:
        lo, hi = (float(f) for f in column_fraction)
    except (TypeError, ValueError, jax.errors.ConcretizationTypeError) as error:
        raise ValueError(
            f"column_fraction must be a static pair of Python floats (bind it with "
            f"functools.partial under jax.jit), got {column_fraction!r}."
        ) from error
    if not 0.0 <= lo <= hi <= 1.0:
        raise ValueError(f"column_fraction must satisfy 0 <= low <= high <= 1, got {(lo, hi)}.")
    n_lo = max(1, math.ceil(lo * width - 1e-9))
    n_hi = min(width, max(n_lo, math.floor(hi * width + 1e-9)))
    return min(n_lo, width), n_hi


def _per_image_param(name: str, value, x: jax.Array) -> jax.Array:
    """A scalar or one value per image (shape x.shape[:-3]), as an array of that shape."""
    value = jnp.asarray(value, x.dtype)
    if value.shape not in ((), x.shape[:-3]):
        raise ValueError(
            f"{name} must be a scalar or have shape x.shape[:-3] = {x.shape[:-3]} (one per "
            f"image), got shape {value.shape} for x of shape {x.shape}."
        )
    return jnp.broadcast_to(value, x.shape[:-3])


def _per_image(single, key, x, *params):
    """Apply ``single(key, image, *params)`` to every (H, W, C) image with its own key.

    Image i of the flattened batch gets ``jax.random.split(key, n)[i]``; a single image
    (rank 3) is a batch of one. ``params`` have shape x.shape[:-3].
    """
    batch = x.shape[:-3]
    n = math.prod(batch)
    flat = x.reshape((n,) + x.shape[-3:])
    keys = sharded_like(jax.random.split(key, n), flat)
    flat_params = [sharded_like(p.reshape((n,) + p.shape[len(batch):]), flat) for p in params]
    out = jax.vmap(single)(keys, flat, *flat_params)
    return jax.tree.map(lambda a: a.reshape(batch + a.shape[1:]), out)


def _finish(out, return_info: bool):
    y, sigma, mask = out
    return (y, {"sigma": sigma, "mask": mask}) if return_info else y


def _channel_subset(key, channels: int, n: int) -> jax.Array:
    """Bool (C,) with exactly n True entries at random places (static n, no indexing)."""
    if n >= channels:
        return jnp.ones((channels,), bool)
    rank = jnp.argsort(jax.random.permutation(key, channels))  # a uniform random ranking
    return rank < n


def _column_mask(key, width: int, channels: int, bounds: tuple[int, int]) -> jax.Array:
    """Bool (W, C): per channel, a uniform number in [lo, hi] of distinct random columns."""
    key_count, key_rank = jax.random.split(key)
    count = jax.random.randint(key_count, (channels,), bounds[0], bounds[1] + 1)
    rank = jnp.argsort(jnp.argsort(jax.random.uniform(key_rank, (width, channels)), 0), 0)
    return rank < count


# Single-image (H, W, C) generators: each returns (y, sigma map, outlier mask).


def _iid2_single(key, x, sigma_range):
    key_sigma, key_noise = jax.random.split(key)
    sigma = jax.random.uniform(
        key_sigma, (x.shape[-1],), x.dtype, sigma_range[0], sigma_range[1]
    )
    y = x + sigma * jax.random.normal(key_noise, x.shape, x.dtype)
    return y, jnp.broadcast_to(sigma, x.shape), jnp.zeros(x.shape, bool)


def _iid1_single(key, x, sigma_range):
    key_sigma, key_noise = jax.random.split(key)
    sigma = jax.random.uniform(key_sigma, (), x.dtype, sigma_range[0], sigma_range[1])
    y = x + sigma * jax.random.normal(key_noise, x.shape, x.dtype)
    return y, jnp.broadcast_to(sigma, x.shape), jnp.zeros(x.shape, bool)


def _bump_single(key, shape, dtype, scale_range):
    """(H, W, C) Gaussian bumps with peak 1, one per channel (the authors' gaussian_kernel2)."""
    height, width, channels = shape
    key_row, key_col, key_scale = jax.random.split(key, 3)

    def centre(k, size):  # the authors' randint(1, size - 1); the whole axis when tiny
        lo, hi = (1, size - 1) if size >= 3 else (0, size)
        return jax.random.randint(k, (channels,), lo, hi)

    row, col = centre(key_row, height), centre(key_col, width)
    scale = jax.random.uniform(key_scale, (channels,), dtype, scale_range[0], scale_range[1])
    rr = jnp.arange(height, dtype=dtype)[:, None, None] - row
    cc = jnp.arange(width, dtype=dtype)[None, :, None] - col
    return jnp.exp(-(rr**2 + cc**2) / (2 * scale**2))


def _sigma_map_single(key, shape, dtype, sigma_range, scale_range, normalize):
    bump = _bump_single(key, shape, dtype, scale_range)
    axes = (0, 1, 2) if normalize == "image" else (0, 1)
    low = bump.min(axes, keepdims=True)
    span = bump.max(axes, keepdims=True) - low
    bump = jnp.where(span > 0, (bump - low) / jnp.where(span > 0, span, 1), 1)
    return sigma_range[0] + bump * (sigma_range[1] - sigma_range[0])


def _non_iid_single(key, x, sigma_range, scale_range, normalize):
    key_map, key_noise = jax.random.split(key)
    sigma = _sigma_map_single(key_map, x.shape, x.dtype, sigma_range, scale_range, normalize)
    y = x + sigma * jax.random.normal(key_noise, x.shape, x.dtype)
    return y, sigma, jnp.zeros(x.shape, bool)


def _impulse_values(key, y, hit, kind, salt_vs_pepper):
    if kind == "salt_and_pepper":
        salt = jax.random.uniform(key, y.shape, y.dtype) < salt_vs_pepper
        value = salt.astype(y.dtype)  # salt = 1, pepper = 0
    else:  # random_valued
        value = jax.random.uniform(key, y.shape, y.dtype)
    return jnp.where(hit, value, y)


def _impulse_hits(key, shape, dtype, amount, channel_mask):
    """Bool (H, W, C): each pixel of a chosen channel is hit with probability ``amount``."""
    return (jax.random.uniform(key, shape, dtype) < amount) & channel_mask


def _check_kind(kind: str):
    if kind not in ("salt_and_pepper", "random_valued"):
        raise ValueError(
            f"kind must be 'salt_and_pepper' or 'random_valued' (static under jax.jit), "
            f"got {kind!r}."
        )


def _check_normalize(normalize: str):
    if normalize not in ("image", "channel"):
        raise ValueError(f"normalize must be 'image' or 'channel', got {normalize!r}.")


# Public generators.


def gaussian_per_image(
    key: jax.Array, x: jax.Array, sigma_range=PAPER_SIGMA_RANGE, *, return_info: bool = False
):
    """Gaussian noise with one level per image, sigma ~ U[sigma_range] (DLW's "iid1").

    Rui et al., arXiv 2301.06081, ``lib.py::add_iid_gaussian1``: y = x + sigma * N(0, I)
    with sigma ~ U[10, 70] / 255 drawn afresh for each image. Not clipped.

    Args:
      key: PRNG key.
      x: clean images in [0, 1], float, shape (..., H, W, C).
      sigma_range: (low, high) of the uniform level, [0, 1] scale; default (10, 70) / 255.
      return_info: also return ``info`` (see the module docstring); ``info["mask"]`` is all
        False here.

    Returns:
      y, same shape and dtype as x, or ``(y, info)``.
    """
    x = _check_images(x)
    sigma_range = _check_range("sigma_range", sigma_range)
    single = functools.partial(_iid1_single, sigma_range=sigma_range)
    return _finish(_per_image(single, key, x), return_info)


def gaussian_per_channel(
    key: jax.Array, x: jax.Array, sigma_range=PAPER_SIGMA_RANGE, *, return_info: bool = False
):
    """Gaussian noise with one level per channel, sigma_c ~ U[sigma_range] (DLW's "iid2").

    Rui et al., arXiv 2301.06081, ``lib.py::add_iid_gaussian2``: for every image and channel
    (band) c, y_c = x_c + sigma_c * N(0, I) with sigma_c ~ U[10, 70] / 255, i.i.d. over
    pixels. This is also the Gaussian part of ``gaussian_impulse``, ``stripe``, ``deadline``
    and of half the channels of ``mixed``. Not clipped.

    Args:
      key: PRNG key.
      x: clean images in [0, 1], float, shape (..., H, W, C).
      sigma_range: (low, high) of the uniform levels, [0, 1] scale; default (10, 70) / 255.
      return_info: also return ``info``: ``info["sigma"]`` holds sigma_c at every pixel.

    Returns:
      y, same shape and dtype as x, or ``(y, info)``.
    """
    x = _check_images(x)
    sigma_range = _check_range("sigma_range", sigma_range)
    single = functools.partial(_iid2_single, sigma_range=sigma_range)
    return _finish(_per_image(single, key, x), return_info)


def non_iid_gaussian(
    key: jax.Array,
    x: jax.Array,
    sigma_range=PAPER_NON_IID_SIGMA_RANGE,
    scale_range=PAPER_SCALE_RANGE,
    *,
    normalize: str = "image",
    return_info: bool = False,
):
    """Spatially varying Gaussian noise with a Gaussian-bump sigma map (DLW's "non").

    Rui et al., arXiv 2301.06081, ``lib.py::add_noniid_gaussian``: per channel c, a bump
    g_c(i, j) = exp(-((i - r_c)^2 + (j - s_c)^2) / (2 scale_c^2)) with scale_c ~ U[16, 64]
    pixels and centre (r_c, s_c) uniform in [1, H - 2] x [1, W - 2]; the bumps are min-max
    normalised to [0, 1] and mapped to sigma = low + g * (high - low), default [5, 75] / 255;
    then y = x + sigma * N(0, I). Not clipped.

    Args:
      key: PRNG key.
      x: clean images in [0, 1], float, shape (..., H, W, C).
      sigma_range: (low, high) of the sigma map, [0, 1] scale; default (5, 75) / 255.
      scale_range: (low, high) of the uniform bump scale, pixels; default (16, 64).
      normalize: ``"image"`` (the authors' choice: one min-max over all channels of the
        image, so the map spans exactly [low, high] over the image and each channel's map
        lies inside it) or ``"channel"`` (each channel spans [low, high]). Static.
      return_info: also return ``info``; ``info["sigma"]`` is the sigma map.

    Returns:
      y, same shape and dtype as x, or ``(y, info)``.
    """
    x = _check_images(x)
    sigma_range = _check_range("sigma_range", sigma_range)
    scale_range = _check_range("scale_range", scale_range)
    _check_normalize(normalize)
    single = functools.partial(
        _non_iid_single, sigma_range=sigma_range, scale_range=scale_range, normalize=normalize
    )
    return _finish(_per_image(single, key, x), return_info)


def impulse(
    key: jax.Array,
    x: jax.Array,
    amount,
    *,
    kind: str = "salt_and_pepper",
    salt_vs_pepper=0.5,
    num_channels="all",
    return_info: bool = False,
):
    """Impulse noise alone: each pixel is replaced with probability ``amount``.

    ``kind="salt_and_pepper"``: a hit pixel becomes 1 (salt, probability ``salt_vs_pepper``)
    or 0 (pepper), as ``skimage.util.random_noise(mode="s&p")`` on a [0, 1] image, which the
    DLW authors use (Rui et al., arXiv 2301.06081, ``lib.py::add_impulse``). Pepper is 0 even
    on noisy inputs below 0, where skimage with ``clip=False`` would write -1 (see the module
    docstring). ``kind="random_valued"``: a hit pixel becomes U[0, 1]. Hits are independent
    Bernoulli(amount) per pixel, so the hit fraction is ``amount`` on average. For the
    authors' training noise (Gaussian plus impulses on some bands) use ``gaussian_impulse``.

    Args:
      key: PRNG key.
      x: images, float, shape (..., H, W, C) (clean in [0, 1], or already noisy).
      amount: hit probability in [0, 1]: a scalar or one per image (shape x.shape[:-3]).
      kind: ``"salt_and_pepper"`` (default) or ``"random_valued"``. Static.
      salt_vs_pepper: probability that a salt-and-pepper hit is salt; default 0.5.
      num_channels: channels hit per image, chosen at random: ``"all"`` (default),
        ``"paper"`` (see ``num_corrupted_channels``) or an int. Static.
      return_info: also return ``info``; ``info["mask"]`` marks the hit pixels and
        ``info["sigma"]`` is 0.

    Returns:
      y, same shape and dtype as x, or ``(y, info)``.
    """
    x = _check_images(x)
    _check_kind(kind)
    amount = _per_image_param("amount", amount, x)
    a = _concrete(amount)
    if a is not None and not np.all((0 <= a) & (a <= 1)):
        raise ValueError(f"amount must lie in [0, 1] (a fraction of pixels), got {a}.")
    n = num_corrupted_channels(num_channels, x.shape[-1])

    def single(key, x, amount):
        key_chan, key_hit, key_value = jax.random.split(key, 3)
        chan = _channel_subset(key_chan, x.shape[-1], n)
        hit = _impulse_hits(key_hit, x.shape, x.dtype, amount, chan)
        y = _impulse_values(key_value, x, hit, kind, salt_vs_pepper)
        return y, jnp.zeros_like(x), hit

    return _finish(_per_image(single, key, x, amount), return_info)


def gaussian_impulse(
    key: jax.Array,
    x: jax.Array,
    amount_range=PAPER_AMOUNT_RANGE,
    sigma_range=PAPER_SIGMA_RANGE,
    *,
    num_channels="paper",
    kind: str = "salt_and_pepper",
    return_info: bool = False,
):
    """DLW's training noise "impluse" [sic]: per-channel Gaussian plus impulses on a subset.

    Rui et al., arXiv 2301.06081, ``lib.py::add_impulse`` (the only noise the public
    training scripts use): ``gaussian_per_channel`` noise (sigma_c ~ U[10, 70] / 255), then
    on ``num_channels`` random channels (10 of 31 bands in the paper) salt-and-pepper with
    its own amount_c ~ U[0.1, 0.5] per channel, salt = 1 and pepper = 0 (the authors' skimage
    call writes pepper as -1 on noisy data; see the module docstring).

    Args:
      key: PRNG key.
      x: clean images in [0, 1], float, shape (..., H, W, C).
      amount_range: (low, high) of the per-channel hit probability; default (0.1, 0.5).
      sigma_range: (low, high) of the per-channel Gaussian levels; default (10, 70) / 255.
      num_channels: corrupted channels per image: ``"paper"`` (default,
        ``max(1, round(10 C / 31))``: 10 of 31, 1 of 3, 1 of 1), ``"all"`` or an int. Static.
      kind: ``"salt_and_pepper"`` (default, as the paper) or ``"random_valued"``. Static.
      return_info: also return ``info``; ``info["mask"]`` marks the impulse pixels.

    Returns:
      y, same shape and dtype as x, or ``(y, info)``.
    """
    x = _check_images(x)
    _check_kind(kind)
    amount_range = _check_range("amount_range", amount_range, 0.0, 1.0)
    sigma_range = _check_range("sigma_range", sigma_range)
    n = num_corrupted_channels(num_channels, x.shape[-1])

    def single(key, x):
        key_gauss, key_imp = jax.random.split(key)
        y, sigma, _ = _iid2_single(key_gauss, x, sigma_range)
        y, hit = _impulse_on_subset(key_imp, y, n, amount_range, kind)
        return y, sigma, hit

    return _finish(_per_image(single, key, x), return_info)


def _impulse_on_subset(key, y, n, amount_range, kind):
    key_chan, key_amount, key_hit, key_value = jax.random.split(key, 4)
    chan = _channel_subset(key_chan, y.shape[-1], n)
    amount = jax.random.uniform(
        key_amount, (y.shape[-1],), y.dtype, amount_range[0], amount_range[1]
    )
    hit = _impulse_hits(key_hit, y.shape, y.dtype, amount, chan)
    return _impulse_values(key_value, y, hit, kind, 0.5), hit


def _columns_on_subset(key, y, n, bounds):
    """Bool (H, W, C) of the corrupted columns of n random channels."""
    key_chan, key_cols = jax.random.split(key)
    chan = _channel_subset(key_chan, y.shape[-1], n)
    cols = _column_mask(key_cols, y.shape[-2], y.shape[-1], bounds) & chan
    return jnp.broadcast_to(cols, y.shape)


def _stripe_on_subset(key, y, n, bounds, shift):
    key_cols, key_shift = jax.random.split(key)
    cols = _columns_on_subset(key_cols, y, n, bounds)
    offset = jax.random.uniform(key_shift, y.shape[-2:], y.dtype, -shift, shift)
    return y + jnp.where(cols, offset, 0), cols


def _deadline_on_subset(key, y, n, bounds):
    cols = _columns_on_subset(key, y, n, bounds)
    return jnp.where(cols, jnp.zeros_like(y), y), cols


def _gaussian_then_columns(corrupt, key, x, sigma_range, column_fraction, num_channels,
                           return_info):
    """Per-channel Gaussian noise, then ``corrupt(key, y, n, bounds) -> (y, mask)`` on the
    columns of n channels (stripe, deadline)."""
    x = _check_images(x)
    sigma_range = _check_range("sigma_range", sigma_range)
    bounds = _column_bounds(column_fraction, x.shape[-2])
    n = num_corrupted_channels(num_channels, x.shape[-1])

    def single(key, x):
        key_gauss, key_columns = jax.random.split(key)
        y, sigma, _ = _iid2_single(key_gauss, x, sigma_range)
        y, cols = corrupt(key_columns, y, n, bounds)
        return y, sigma, cols

    return _finish(_per_image(single, key, x), return_info)


def stripe(
    key: jax.Array,
    x: jax.Array,
    sigma_range=PAPER_SIGMA_RANGE,
    shift=PAPER_STRIPE_SHIFT,
    *,
    column_fraction=PAPER_COLUMN_FRACTION,
    num_channels="paper",
    return_info: bool = False,
):
    """DLW's "stripe": per-channel Gaussian noise plus column stripes on some channels.

    Rui et al., arXiv 2301.06081, ``lib.py::add_stripe``: ``gaussian_per_channel`` noise
    (sigma_c ~ U[10, 70] / 255), then on ``num_channels`` random channels (10 of 31 bands),
    a uniform number of distinct random columns in [ceil(0.05 W), floor(0.2 W)] (at least 1)
    each get one offset ~ U[-shift, shift], shift = 0.25, added to the whole column. Columns
    and offsets are drawn per channel. (The authors subtract the offset; U[-s, s] is
    symmetric, so the law is the same.) Pass ``sigma_range=(0, 0)`` for stripes alone.

    Args:
      key: PRNG key.
      x: clean images in [0, 1], float, shape (..., H, W, C).
      sigma_range: (low, high) of the per-channel Gaussian levels; default (10, 70) / 255.
      shift: half-width of the uniform column offsets; default 0.25.
      column_fraction: static (low, high) fraction of striped columns; default (0.05, 0.2).
      num_channels: striped channels per image: ``"paper"`` (default,
        ``max(1, round(10 C / 31))``), ``"all"`` or an int. Static.
      return_info: also return ``info``; ``info["mask"]`` marks the striped columns.

    Returns:
      y, same shape and dtype as x, or ``(y, info)``.
    """
    return _gaussian_then_columns(
        lambda k, y, n, bounds: _stripe_on_subset(k, y, n, bounds, shift),
        key, x, sigma_range, column_fraction, num_channels, return_info)


def deadline(
    key: jax.Array,
    x: jax.Array,
    sigma_range=PAPER_SIGMA_RANGE,
    *,
    column_fraction=PAPER_COLUMN_FRACTION,
    num_channels="paper",
    return_info: bool = False,
):
    """DLW's "deadline": per-channel Gaussian noise plus dead (zero) columns on some channels.

    Rui et al., arXiv 2301.06081, ``lib.py::add_deadline``: ``gaussian_per_channel`` noise
    (sigma_c ~ U[10, 70] / 255), then on ``num_channels`` random channels (10 of 31 bands),
    a uniform number of distinct random columns in [ceil(0.05 W), floor(0.2 W)] (at least 1)
    are set to exactly 0. Columns are drawn per channel.

    Args:
      key: PRNG key.
      x: clean images in [0, 1], float, shape (..., H, W, C).
      sigma_range: (low, high) of the per-channel Gaussian levels; default (10, 70) / 255.
      column_fraction: static (low, high) fraction of dead columns; default (0.05, 0.2).
      num_channels: channels with dead columns per image: ``"paper"`` (default,
        ``max(1, round(10 C / 31))``), ``"all"`` or an int. Static.
      return_info: also return ``info``; ``info["mask"]`` marks the dead columns.

    Returns:
      y, same shape and dtype as x, or ``(y, info)``.
    """
    return _gaussian_then_columns(_deadline_on_subset, key, x, sigma_range, column_fraction,
                                  num_channels, return_info)


def mixed(
    key: jax.Array,
    x: jax.Array,
    *,
    sigma_range=PAPER_SIGMA_RANGE,
    non_iid_sigma_range=PAPER_NON_IID_SIGMA_RANGE,
    scale_range=PAPER_SCALE_RANGE,
    amount_range=PAPER_AMOUNT_RANGE,
    shift=PAPER_STRIPE_SHIFT,
    column_fraction=PAPER_COLUMN_FRACTION,
    num_channels="paper",
    return_info: bool = False,
):
    """Mixed noise: Gaussian of two kinds, then stripes, dead lines and impulses.

    The "mix" case of the DLW line of work (Rui et al., arXiv 2301.06081; the test data of its
    CVPR 2021 predecessor, HWnet: "half the bands non-i.i.d., half spatially varying, plus
    stripe, impulse and deadline, each on 10 bands"), with the ``lib.py`` ranges. Exactly:

    1. Gaussian on every channel: a random ``ceil(C / 2)`` channels get spatially varying
       noise as ``non_iid_gaussian`` (map in [5, 75] / 255, scale U[16, 64], normalised over
       those channels together), the other ``floor(C / 2)`` get i.i.d. noise with their own
       level as ``gaussian_per_channel`` (U[10, 70] / 255). (C = 1: spatially varying.)
    2. Stripes as ``stripe`` on ``num_channels`` random channels.
    3. Dead columns (0) as ``deadline`` on ``num_channels`` random channels.
    4. Salt-and-pepper (1 / 0) as ``gaussian_impulse`` on ``num_channels`` random channels,
       amount_c ~ U[0.1, 0.5].

    The channel subsets of steps 2-4 are drawn independently (they may overlap); later steps
    overwrite earlier ones, so dead columns are exactly 0 and impulses exactly 0 or 1.

    Args:
      key: PRNG key.
      x: clean images in [0, 1], float, shape (..., H, W, C).
      sigma_range: levels of the i.i.d. channels; default (10, 70) / 255.
      non_iid_sigma_range: sigma-map range of the spatially varying channels; (5, 75) / 255.
      scale_range: bump scale in pixels; default (16, 64).
      amount_range: per-channel impulse probability; default (0.1, 0.5).
      shift: half-width of the stripe offsets; default 0.25.
      column_fraction: static fraction of striped and of dead columns; default (0.05, 0.2).
      num_channels: channels per corruption in steps 2-4: ``"paper"`` (default,
        ``max(1, round(10 C / 31))``), ``"all"`` or an int. Static.
      return_info: also return ``info``; ``info["sigma"]`` is the Gaussian level per pixel
        and ``info["mask"]`` the union of striped, dead and impulse pixels.

    Returns:
      y, same shape and dtype as x, or ``(y, info)``.
    """
    x = _check_images(x)
    sigma_range = _check_range("sigma_range", sigma_range)
    non_iid_sigma_range = _check_range("non_iid_sigma_range", non_iid_sigma_range)
    scale_range = _check_range("scale_range", scale_range)
    amount_range = _check_range("amount_range", amount_range, 0.0, 1.0)
    bounds = _column_bounds(column_fraction, x.shape[-2])
    channels = x.shape[-1]
    n = num_corrupted_channels(num_channels, channels)
    n_non_iid = -(-channels // 2)

    def single(key, x):
        k_split, k_iid, k_map, k_noise, k_stripe, k_dead, k_imp = jax.random.split(key, 7)
        spatial = _channel_subset(k_split, channels, n_non_iid)
        level = jax.random.uniform(k_iid, (channels,), x.dtype, sigma_range[0], sigma_range[1])
        bump = _bump_single(k_map, x.shape, x.dtype, scale_range)
        # Min-max normalise the bumps over the spatially varying channels together (the
        # authors' "image" normalisation, restricted to the channels that use it).
        big = jnp.where(spatial, bump, -jnp.inf).max()
        small = jnp.where(spatial, bump, jnp.inf).min()
        bump = jnp.where(big > small, (bump - small) / jnp.where(big > small, big - small, 1), 1)
        lo, hi = non_iid_sigma_range
        sigma = jnp.where(spatial, lo + bump * (hi - lo), level)
        y = x + sigma * jax.random.normal(k_noise, x.shape, x.dtype)
        y, striped = _stripe_on_subset(k_stripe, y, n, bounds, shift)
        y, dead = _deadline_on_subset(k_dead, y, n, bounds)
        y, hit = _impulse_on_subset(k_imp, y, n, amount_range, "salt_and_pepper")
        return y, sigma, striped | dead | hit

    return _finish(_per_image(single, key, x), return_info)


#: Noise types by name, each ``fn(key, x, *, return_info=False, **overrides)`` with the DLW
#: authors' defaults: "gaussian" is their "iid2", "gaussian_per_image" their "iid1",
#: "non_iid" their "non", "impulse" their training noise "impluse" (Gaussian plus
#: salt-and-pepper), "stripe", "deadline", and "mixed" the "mix" test case.
NOISE_TYPES: Mapping[str, Callable] = {
    "gaussian": gaussian_per_channel,
    "gaussian_per_image": gaussian_per_image,
    "non_iid": non_iid_gaussian,
    "impulse": gaussian_impulse,
    "stripe": stripe,
    "deadline": deadline,
    "mixed": mixed,
}


def sample_noise(
    key: jax.Array,
    x: jax.Array,
    kinds,
    *,
    probs=None,
    params: Mapping[str, Mapping] | None = None,
    return_info: bool = False,
):
    """Noise for training: each image gets one noise type drawn from ``kinds``.

    As the DLW authors' ``Train_dataset`` (Rui et al., arXiv 2301.06081, ``lib.py``), which
    picks one generator uniformly per patch from a list (their scripts list only "impluse").
    Every type is evaluated and one selected per image (``lax.switch`` under ``vmap``), so
    the cost is that of all listed types.

    Args:
      key: PRNG key.
      x: clean images in [0, 1], float, shape (..., H, W, C).
      kinds: a name or a sequence of names from ``NOISE_TYPES`` ("gaussian",
        "gaussian_per_image", "non_iid", "impulse", "stripe", "deadline", "mixed"). Static.
      probs: probabilities of the kinds (default uniform); a sequence as long as ``kinds``.
      params: keyword overrides per kind, e.g. ``{"impulse": {"amount_range": (0.1, 0.3)}}``
        (values that fix shapes, such as ``num_channels``, must be Python values).
      return_info: also return ``info`` as the generators do, plus ``info["kind"]``: the index
        into ``kinds`` used for each image, int32 of shape x.shape[:-3].

    Returns:
      y, same shape and dtype as x, or ``(y, info)``.
    """
    x = _check_images(x)
    kinds = (kinds,) if isinstance(kinds, str) else tuple(kinds)
    if not kinds:
        raise ValueError(f"kinds must name at least one noise type from {sorted(NOISE_TYPES)}.")
    unknown = [k for k in kinds if k not in NOISE_TYPES]
    if unknown:
        raise ValueError(f"unknown noise types {unknown}; choose from {sorted(NOISE_TYPES)}.")
    params = dict(params or {})
    extra = set(params) - set(kinds)
    if extra:
        raise ValueError(f"params names noise types {sorted(extra)} that are not in kinds.")
    if probs is None:
        logits = jnp.zeros((len(kinds),))
    else:
        probs = jnp.asarray(probs, jnp.float32)
        if probs.shape != (len(kinds),):
            raise ValueError(
                f"probs must have one entry per kind ({len(kinds)}), got shape {probs.shape}."
            )
        p = _concrete(probs)
        if p is not None and (np.any(p < 0) or not np.isclose(p.sum(), 1.0)):
            raise ValueError(f"probs must be non-negative and sum to 1, got {p}.")
        logits = jnp.log(probs)
    fns = [
        functools.partial(NOISE_TYPES[k], return_info=True, **params.get(k, {})) for k in kinds
    ]
    # Validate the overrides once, eagerly on shapes only.
    for fn in fns:
        jax.eval_shape(fn, key, jax.ShapeDtypeStruct(x.shape[-3:], x.dtype))

    def single(key, image):
        key_kind, key_noise = jax.random.split(key)
        index = jax.random.categorical(key_kind, logits)
        branches = [lambda k, im, fn=fn: fn(k, im) for fn in fns]
        y, info = jax.lax.switch(index, branches, key_noise, image)
        return y, info["sigma"], info["mask"], index.astype(jnp.int32)

    y, sigma, mask, index = _per_image(single, key, x)
    if return_info:
        return y, {"sigma": sigma, "mask": mask, "kind": index}
    return y
