"""Tests for the heterogeneous noise models of jaxden.noise (DLW, arXiv 2301.06081).

Oracles are statistics of the outputs (and of ``info``), with tolerances of 5 standard errors
for the sample size at fixed keys, so they are deterministic and far from flaky. Compile time
dominates on CPU, so each generator is jitted once per shape and the shapes are few; the
first two images of every batch are equal, so that independence across a batch is checked
by every test for free.
"""

import functools
import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats

from jaxden import noise

S31 = (4, 64, 64, 31)  # hyperspectral-like (CAVE / ICVL have 31 bands)
S3 = (4, 64, 64, 3)  # RGB
S1 = (2, 32, 32, 1)  # grayscale
LO, HI = 10 / 255, 70 / 255  # the authors' iid2 range


def _jit(fn, **static):
    return jax.jit(functools.partial(fn, return_info=True, **static))


_per_channel = _jit(noise.gaussian_per_channel)
_per_image = _jit(noise.gaussian_per_image)
_non_iid = _jit(noise.non_iid_gaussian)
_non_iid_channel = _jit(noise.non_iid_gaussian, normalize="channel")
_impulse = _jit(noise.impulse)
_impulse_rv = _jit(noise.impulse, kind="random_valued", num_channels=1)
_gaussian_impulse = _jit(noise.gaussian_impulse)
_stripe = _jit(noise.stripe)
_deadline = _jit(noise.deadline)


def _images(shape, low=0.0, high=1.0, seed=0):
    x = np.random.default_rng(seed).uniform(low, high, size=shape)
    x[1] = x[0]  # equal images must still get independent noise
    return jnp.asarray(x, jnp.float32)


@pytest.fixture(scope="module")
def x31():
    return _images(S31)


@pytest.fixture(scope="module")
def x3():
    return _images(S3, 0.01, 0.99)  # no pixel is already 0 or 1: impulses are visible


def _assert_independent(a, min_fraction=0.9):
    """Images 0 and 1 of the inputs are equal; their outputs must differ (almost) everywhere.

    For masks hit with probability p, independent draws differ at 2 p (1 - p) of the pixels.
    """
    assert float(jnp.mean(a[0] != a[1])) > min_fraction


def _std_close(values, sigma):
    """|std - sigma| within 5 standard errors of a std over len(values) normal samples."""
    return abs(np.std(values) - sigma) < 5 * sigma / np.sqrt(2 * values.size)


def test_num_corrupted_channels_rule():
    assert [noise.num_corrupted_channels("paper", c) for c in (1, 3, 31, 62)] == [1, 1, 10, 20]
    assert noise.num_corrupted_channels("all", 3) == 3
    assert noise.num_corrupted_channels(2, 3) == 2


def test_gaussian_per_channel_levels_and_std(x31):
    y, info = _per_channel(jax.random.key(0), x31)
    assert y.shape == x31.shape and y.dtype == x31.dtype
    sigma = np.asarray(info["sigma"], np.float64)
    assert not info["mask"].any()
    per_band = sigma[:, 0, 0, :]  # (B, C)
    np.testing.assert_array_equal(sigma, np.broadcast_to(per_band[:, None, None], S31))
    assert per_band.min() >= LO and per_band.max() <= HI
    ks = scipy.stats.kstest(per_band.ravel(), scipy.stats.uniform(LO, HI - LO).cdf)
    assert ks.pvalue > 1e-3
    n = np.asarray(y - x31, np.float64)
    for b in range(S31[0]):
        for c in range(S31[-1]):
            assert _std_close(n[b, ..., c], per_band[b, c])
    _assert_independent(n)
    assert not np.allclose(per_band[0], per_band[1])


def test_gaussian_per_image_one_level(x31):
    y, info = _per_image(jax.random.key(1), x31)
    sigma = np.asarray(info["sigma"], np.float64)
    levels = sigma[:, 0, 0, 0]
    np.testing.assert_array_equal(sigma, np.broadcast_to(levels[:, None, None, None], S31))
    assert levels.min() >= LO and levels.max() <= HI and len(set(levels)) == S31[0]
    n = np.asarray(y - x31, np.float64)
    for b in range(S31[0]):
        assert _std_close(n[b], levels[b])


def test_non_iid_sigma_map_is_a_bump_in_range(x3):
    lo, hi = 5 / 255, 75 / 255
    _, info = _non_iid(jax.random.key(2), x3)
    s = np.asarray(info["sigma"], np.float64)
    tol = 1e-6
    for b in range(S3[0]):  # the authors normalise over the whole image
        assert abs(s[b].min() - lo) < tol and abs(s[b].max() - hi) < tol
        for c in range(S3[-1]):
            m = s[b, ..., c]
            r, q = np.unravel_index(np.argmax(m), m.shape)
            assert 1 <= r <= S3[1] - 2 and 1 <= q <= S3[2] - 2
            assert abs(m[r, q] - hi) < tol  # every bump peaks at the top of the range
            # radially non-increasing away from the centre, along its row and column
            assert np.all(np.diff(m[r, q:]) <= tol) and np.all(np.diff(m[r, : q + 1]) >= -tol)
            assert np.all(np.diff(m[r:, q]) <= tol) and np.all(np.diff(m[: r + 1, q]) >= -tol)
            # symmetric about the centre: a function of the distance only
            k = min(r, q, S3[1] - 1 - r, S3[2] - 1 - q)
            np.testing.assert_allclose(m[r - k, q], m[r + k, q], atol=tol)
            np.testing.assert_allclose(m[r - k, q], m[r, q + k], atol=tol)
    _, info = _non_iid_channel(jax.random.key(2), x3)
    s = np.asarray(info["sigma"], np.float64)
    np.testing.assert_allclose(s.min((1, 2)), lo, atol=tol)
    np.testing.assert_allclose(s.max((1, 2)), hi, atol=tol)


def test_non_iid_local_std_follows_the_map(x3):
    y, info = _non_iid(jax.random.key(3), x3)
    n = np.asarray(y - x3, np.float64).ravel()
    s = np.asarray(info["sigma"], np.float64).ravel()
    edges = np.quantile(s, np.linspace(0, 1, 6))
    measured = []
    for a, b in zip(edges[:-1], edges[1:]):
        sel = (s >= a) & (s <= b)
        rms = np.sqrt(np.mean(s[sel] ** 2))  # the std of the noise in this bin
        assert _std_close(n[sel], rms)
        measured.append(np.std(n[sel]))
    assert np.all(np.diff(measured) > 0)
    _assert_independent(np.asarray(y - x3))


def test_salt_and_pepper_fraction_and_values(x3):
    amount = jnp.asarray([0.1, 0.1, 0.3, 0.5], jnp.float32)  # one per image
    y, info = _impulse(jax.random.key(4), x3, amount)
    hit = np.asarray(info["mask"])
    yv, xv = np.asarray(y), np.asarray(x3)
    np.testing.assert_array_equal(hit, yv != xv)  # x avoids 0 and 1, so every hit shows
    assert set(np.unique(yv[hit])) == {0.0, 1.0}  # salt = 1, pepper = 0, nothing else
    assert not np.any(info["sigma"])
    size = hit[0].size
    for b, p in enumerate(np.asarray(amount, np.float64)):
        assert abs(hit[b].mean() - p) < 5 * np.sqrt(p * (1 - p) / size)
    salt = yv[hit].mean()
    assert abs(salt - 0.5) < 5 * np.sqrt(0.25 / hit.sum())
    _assert_independent(hit, 0.5 * 2 * 0.1 * 0.9)


def test_random_valued_impulse_is_uniform_on_one_channel(x3):
    y, info = _impulse_rv(jax.random.key(5), x3, 0.4)
    hit = np.asarray(info["mask"])
    yv, xv = np.asarray(y), np.asarray(x3)
    np.testing.assert_array_equal(yv[~hit], xv[~hit])
    np.testing.assert_array_equal(hit.any((1, 2)).sum(-1), 1)  # exactly one channel each
    size = S3[1] * S3[2] * S3[0]
    assert abs(hit.sum() / size - 0.4) < 5 * np.sqrt(0.24 / size)
    assert scipy.stats.kstest(yv[hit], "uniform").pvalue > 1e-3


def test_gaussian_impulse_is_the_authors_training_noise(x31):
    y, info = _gaussian_impulse(jax.random.key(6), x31)
    hit = np.asarray(info["mask"])
    yv, n = np.asarray(y), np.asarray(y - x31, np.float64)
    sigma = np.asarray(info["sigma"], np.float64)
    bands = hit.any((1, 2))  # (B, C)
    np.testing.assert_array_equal(bands.sum(-1), 10)  # 10 of 31 bands
    assert set(np.unique(yv[hit])) <= {0.0, 1.0}
    size = S31[1] * S31[2]
    frac = hit.mean((1, 2))[bands]
    assert frac.min() > 0.1 - 5 * np.sqrt(0.09 / size)
    assert frac.max() < 0.5 + 5 * np.sqrt(0.25 / size)
    assert sigma.min() >= LO and sigma.max() <= HI
    for b in range(S31[0]):
        for c in range(S31[-1]):
            v = n[b, ..., c][~hit[b, ..., c]]
            assert _std_close(v, sigma[b, 0, 0, c])
    _assert_independent(n)


def _column_bounds(width):
    return math.ceil(0.05 * width), math.floor(0.2 * width)


def test_stripe_offsets_are_column_constant_on_chosen_bands(x31):
    y, info = _stripe(jax.random.key(7), x31, (0.0, 0.0))  # stripes alone
    d = np.asarray(y - x31, np.float64)
    cols = np.asarray(info["mask"])
    np.testing.assert_array_equal(cols, np.broadcast_to(cols[:, :1], cols.shape))
    np.testing.assert_allclose(d, np.broadcast_to(d[:, :1], d.shape), atol=1e-6)
    np.testing.assert_array_equal(d[~cols], 0.0)
    offsets = d[:, 0][cols[:, 0]]
    assert np.all(offsets != 0) and np.abs(offsets).max() <= 0.25 + 1e-6
    assert scipy.stats.kstest(offsets, scipy.stats.uniform(-0.25, 0.5).cdf).pvalue > 1e-3
    per_band = cols[:, 0].sum(1)  # (B, C): striped columns per band
    np.testing.assert_array_equal((per_band > 0).sum(-1), 10)
    lo, hi = _column_bounds(S31[2])
    counts = per_band[per_band > 0]
    assert counts.min() >= lo and counts.max() <= hi and len(set(counts)) > 3
    _assert_independent(cols[:, 0], 0.03)  # each mask covers about 4% of (W, C)
    # with the default Gaussian part: the same columns (same key), plus iid2 noise
    y2, info2 = _stripe(jax.random.key(7), x31, (LO, HI))
    np.testing.assert_array_equal(info2["mask"], info["mask"])
    n = np.asarray(y2 - y, np.float64)  # the Gaussian part alone
    sigma = np.asarray(info2["sigma"], np.float64)
    for c in range(S31[-1]):
        assert _std_close(n[0, ..., c], sigma[0, 0, 0, c])


def test_deadline_zeroes_whole_columns_of_one_rgb_channel(x3):
    y, info = _deadline(jax.random.key(8), x3)
    dead = np.asarray(info["mask"])
    yv = np.asarray(y)
    np.testing.assert_array_equal(dead, np.broadcast_to(dead[:, :1], dead.shape))
    np.testing.assert_array_equal(yv[dead], 0.0)
    assert np.all(yv[~dead] != 0.0)
    np.testing.assert_array_equal(dead.any((1, 2)).sum(-1), 1)  # "paper" rule: 1 of 3
    lo, hi = _column_bounds(S3[2])
    counts = dead[:, 0].sum(1).max(-1)
    assert counts.min() >= lo and counts.max() <= hi
    n = np.asarray(y - x3, np.float64)
    sigma = np.asarray(info["sigma"], np.float64)
    assert sigma.min() >= LO and sigma.max() <= HI
    for b in range(S3[0]):
        for c in range(S3[-1]):
            assert _std_close(n[b, ..., c][~dead[b, ..., c]], sigma[b, 0, 0, c])


def _mixed(key, x, shift=0.25, amount_range=(0.1, 0.5)):
    """``mixed`` with two components adjustable: one compile for every variant."""
    return _mixed_jit(key, x, shift, amount_range)


_mixed_jit = jax.jit(
    lambda key, x, shift, amount_range: noise.mixed(
        key, x, shift=shift, amount_range=amount_range, return_info=True
    )
)


def test_mixed_composes_all_components(x31):
    key = jax.random.key(9)
    y, info = _mixed(key, x31)
    yv = np.asarray(y)
    sigma = np.asarray(info["sigma"], np.float64)
    mask = np.asarray(info["mask"])
    # 1. Gaussian: ceil(31 / 2) = 16 spatially varying bands, 15 i.i.d. bands
    flat = sigma.reshape(S31[0], -1, S31[-1])
    varying = flat.max(1) > flat.min(1)  # (B, C)
    np.testing.assert_array_equal(varying.sum(-1), 16)
    for b in range(S31[0]):
        assert abs(flat[b][:, varying[b]].min() - 5 / 255) < 1e-6  # normalised together
        assert abs(flat[b][:, varying[b]].max() - 75 / 255) < 1e-6
        assert np.ptp(flat[b][:, varying[b]].min(0)) > 1e-3  # not per band: minima differ
        iid = flat[b, 0, ~varying[b]]
        assert iid.min() >= LO and iid.max() <= HI
        z = np.asarray(y - x31, np.float64)[b][~mask[b]] / sigma[b][~mask[b]]
        assert abs(z.std() - 1) < 5 / np.sqrt(2 * z.size)
    # 2. stripes: switching the offsets off changes only whole columns of 10 bands by a
    #    constant (pixels later overwritten by dead lines or impulses do not change)
    y0, info0 = _mixed(key, x31, shift=0.0)
    d = np.asarray(y - y0, np.float64)
    changed = np.abs(d) > 1e-6
    col = np.abs(d).max(1, keepdims=True) * np.sign(d.sum(1, keepdims=True))
    np.testing.assert_allclose(np.where(changed, d, 0), np.where(changed, col, 0), atol=1e-5)
    np.testing.assert_array_equal(changed.any((1, 2)).sum(-1), 10)
    # 3. dead lines: whole columns of zeros on 10 bands (impulses may put salt on them)
    dead = np.all((yv == 0) | (yv == 1), axis=1) & (np.mean(yv == 0, axis=1) > 0.5)
    np.testing.assert_array_equal(dead.any(1).sum(-1), 10)
    lo, hi = _column_bounds(S31[2])
    counts = dead.sum(1)[dead.any(1)]
    assert counts.min() >= lo and counts.max() <= hi
    # 4. impulses: switching them off changes 10 bands, only at pixels now 0 or 1,
    #    with a fraction in [0.1, 0.5] of each band
    y1, info1 = _mixed(key, x31, amount_range=(0.0, 0.0))
    hit = np.asarray(y != y1)
    assert set(np.unique(yv[hit])) <= {0.0, 1.0}
    bands = hit.any((1, 2))
    np.testing.assert_array_equal(bands.sum(-1), 10)
    frac = np.asarray(info["mask"] & ~info1["mask"]).mean((1, 2))[bands]
    size = S31[1] * S31[2]
    assert frac.min() > 0.1 - 5 * np.sqrt(0.09 / size)
    assert frac.max() < 0.5 + 5 * np.sqrt(0.25 / size)
    np.testing.assert_array_equal(info1["mask"] | hit, mask)
    _assert_independent(yv)


def test_sampler_every_type_on_grayscale():
    """All types through one ``sample_noise`` compile (RGB and 31 bands are tested above)."""
    shape = (128, 16, 16, 1)
    x = _images(shape)
    kinds = tuple(noise.NOISE_TYPES)
    probs = (0.4,) + (0.1,) * (len(kinds) - 1)
    sample = jax.jit(
        functools.partial(noise.sample_noise, kinds=kinds, probs=probs, return_info=True)
    )
    key = jax.random.key(10)
    y, info = sample(key, x)
    chex.assert_shape([y, info["sigma"], info["mask"]], shape)
    chex.assert_shape(info["kind"], shape[:1])
    assert y.dtype == x.dtype and bool(jnp.all(jnp.isfinite(y)))
    chex.assert_trees_all_equal((y, info), sample(key, x))
    y2, _ = sample(jax.random.key(11), x)
    assert float(jnp.mean(y != y2)) > 0.9
    _assert_independent(y - x)
    # kinds drawn with the given probabilities, and info consistent with them
    kind = np.asarray(info["kind"])
    counts = np.bincount(kind, minlength=len(kinds))
    assert scipy.stats.chisquare(counts, np.asarray(probs) * kind.size).pvalue > 1e-3
    corrupted = np.isin(kind, [kinds.index(k) for k in ("impulse", "stripe", "deadline", "mixed")])
    np.testing.assert_array_equal(np.asarray(info["mask"]).any((1, 2, 3)), corrupted)
    sigma = np.asarray(info["sigma"])
    varying = sigma.max((1, 2, 3)) > sigma.min((1, 2, 3))
    spatial = np.isin(kind, [kinds.index("non_iid"), kinds.index("mixed")])
    np.testing.assert_array_equal(varying, spatial)


@pytest.mark.parametrize(
    "fn, args, images",
    [
        (_per_channel, (), "x31"),
        (_per_image, (), "x31"),
        (_non_iid, (), "x3"),
        (_impulse, (0.3,), "x3"),
        (_gaussian_impulse, (), "x31"),
        (_stripe, ((LO, HI),), "x31"),
        (_deadline, (), "x3"),
        (_mixed, (), "x31"),
    ],
    ids=lambda v: getattr(v, "__name__", None) if callable(v) else None,
)
def test_determinism_per_key(fn, args, images, request):
    """Same key, same noise; another key, other noise (shapes already compiled above)."""
    x = request.getfixturevalue(images)
    a, info = fn(jax.random.key(13), x, *args)
    chex.assert_trees_all_equal((a, info), fn(jax.random.key(13), x, *args))
    b, _ = fn(jax.random.key(14), x, *args)
    assert float(jnp.mean(a != b)) > 0.3  # impulses leave most pixels alone
    if fn is _impulse:
        _assert_independent(info["mask"], 0.5 * 2 * 0.3 * 0.7)
    else:
        _assert_independent(a - x)


def test_vmap_and_eager_match_jit(x31):
    keys = jax.random.split(jax.random.key(15), S31[0])
    fn = functools.partial(noise.gaussian_per_image, return_info=True)
    y, info = jax.jit(jax.vmap(fn))(keys, x31)  # each x31[i] is one (H, W, C) image
    for i in (0, 3):
        yi, infoi = _per_image(keys[i], x31[i : i + 1])  # a batch of one: the same key
        chex.assert_trees_all_close((y[i], info["sigma"][i]), (yi[0], infoi["sigma"][0]))
    eager = noise.gaussian_per_image(jax.random.key(1), x31)
    chex.assert_trees_all_close(eager, _per_image(jax.random.key(1), x31)[0], atol=1e-6)


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda k, x: noise.stripe(k, x[0, 0]), r"rank >= 3.*\[\.\.\., None\]"),
        (lambda k, x: noise.deadline(k, (x * 255).astype(jnp.uint8)), "astype"),
        (lambda k, x: noise.gaussian_per_channel(k, x, (0.3, 0.1)), "low <= high"),
        (lambda k, x: noise.gaussian_per_channel(k, x, 0.1), "pair"),
        (lambda k, x: noise.non_iid_gaussian(k, x, (-0.1, 0.2)), "0.0 <= low"),
        (lambda k, x: noise.non_iid_gaussian(k, x, normalize="band"), "'image' or 'channel'"),
        (lambda k, x: noise.impulse(k, x, 1.5), r"amount must lie in \[0, 1\]"),
        (lambda k, x: noise.impulse(k, x, jnp.zeros(3)), "one per image"),
        (lambda k, x: noise.impulse(k, x, 0.1, kind="gaussian"), "random_valued"),
        (lambda k, x: noise.impulse(k, x, 0.1, num_channels=4), r"in \[0, 3\]"),
        (lambda k, x: noise.gaussian_impulse(k, x, num_channels="some"), "'paper', 'all'"),
        (lambda k, x: noise.gaussian_impulse(k, x, (0.2, 1.2)), "<= 1.0"),
        (lambda k, x: noise.stripe(k, x, column_fraction=(0.3, 0.1)), "column_fraction"),
        (lambda k, x: noise.sample_noise(k, x, ("gaussian", "speckle")), "speckle"),
        (lambda k, x: noise.sample_noise(k, x, ()), "at least one"),
        (lambda k, x: noise.sample_noise(k, x, "gaussian", probs=(0.5, 0.5)), "one entry"),
        (lambda k, x: noise.sample_noise(k, x, ("mixed", "stripe"), probs=(0.9, 0.2)), "sum"),
        (lambda k, x: noise.sample_noise(k, x, "stripe", params={"mixed": {}}), "not in kinds"),
    ],
)
def test_bad_inputs_raise_clear_errors(call, match):
    with pytest.raises(ValueError, match=match):
        call(jax.random.key(0), jnp.zeros((2, 8, 8, 3)))


def test_small_images_keep_at_least_one_column():
    x = jnp.full((2, 4, 4, 1), 0.5, jnp.float32)
    _, info = _deadline(jax.random.key(16), x)
    np.testing.assert_array_equal(np.asarray(info["mask"])[:, 0].sum((1, 2)), 1)
    _, info = _non_iid(jax.random.key(16), x[:, :1, :1])
    np.testing.assert_allclose(info["sigma"], 75 / 255)
