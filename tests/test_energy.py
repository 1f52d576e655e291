"""Tests for the classification-denoising energy network (jaxden.models.energy).

All tests use GradResNetTiny (widths (4, 8), one block per stage, 2 groups). Each model
configuration is built once and split into (graphdef, params); the jitted functions of a
configuration are shared by the tests, and jit only recompiles for a new shape or sharding.
"""

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from jax.flatten_util import ravel_pytree

from jaxden.models.energy import GradResNet, GradResNetTiny

K = 10  # classes
B = 8  # batch: one sample per simulated device


def _images(shape, seed=0):
    return jax.random.uniform(jax.random.key(seed), shape)


@functools.cache
def _net(in_channels=1, sigma_conditioning=False):
    """(params, jitted functions) of a tiny model; built and compiled once per configuration."""
    model = GradResNetTiny(in_channels, num_classes=K, sigma_conditioning=sigma_conditioning,
                           rngs=nnx.Rngs(0))
    graphdef, params = nnx.split(model)

    def forward(params, y, sigma=None):
        return nnx.merge(graphdef, params)(y, sigma)

    def log_p(params, y, sigma=None):  # sum_b log p(y_b) up to a constant
        return jnp.sum(jax.nn.logsumexp(forward(params, y, sigma), axis=-1))

    input_grad = jax.grad(log_p, argnums=1)  # the Tweedie score, (B, H, W, C)

    def score_norm(params, y):  # mean_b ||grad_y log p(y_b)||^2: needs double backprop
        return jnp.sum(input_grad(params, y) ** 2) / y.shape[0]

    fns = dict(forward=jax.jit(forward), input_grad=jax.jit(input_grad),
               score_norm_and_grad=jax.jit(jax.value_and_grad(score_norm)))
    return params, fns


@pytest.mark.parametrize("shape", [(B, 28, 28, 1), (B, 32, 32, 3), (B, 13, 11, 1)])
def test_output_shape_and_finite(shape):
    params, fns = _net(in_channels=shape[-1])
    f = fns["forward"](params, _images(shape))
    chex.assert_shape(f, (B, K))
    chex.assert_tree_all_finite(f)


def _tiny_param_count(in_channels, num_classes, sigma_conditioning):
    """Hand count for widths (4, 8), one block per stage; GroupNorm(n) has 2n parameters."""
    c = in_channels + int(sigma_conditioning)
    stem = 3 * 3 * c * 4 + 4
    # stage 0, 4 -> 4, stride 1: GN(4), conv 3x3 4->4, GN(4), conv 3x3 4->4, identity shortcut
    stage0 = 2 * 4 + (3 * 3 * 4 * 4 + 4) + 2 * 4 + (3 * 3 * 4 * 4 + 4)
    # stage 1, 4 -> 8, stride 2: GN(4), conv 3x3 4->8, GN(8), conv 3x3 8->8, 1x1 conv 4->8
    stage1 = 2 * 4 + (3 * 3 * 4 * 8 + 8) + 2 * 8 + (3 * 3 * 8 * 8 + 8) + (4 * 8 + 8)
    readout = 2 * 4 + 2 * 8 + (4 + 8) * num_classes + num_classes  # GN(4), GN(8), Linear
    return stem + stage0 + stage1 + readout


@pytest.mark.parametrize("in_channels,sigma_conditioning", [(1, False), (3, False), (1, True)])
def test_param_count(in_channels, sigma_conditioning):
    params, _ = _net(in_channels, sigma_conditioning)
    count = sum(x.size for x in jax.tree.leaves(params))
    assert count == _tiny_param_count(in_channels, K, sigma_conditioning)
    if (in_channels, sigma_conditioning) == (1, False):
        # 40 + 312 + 944 + (24 + 130)
        assert count == 1450


def test_input_gradient_full_resolution_and_samples_independent():
    params, fns = _net()
    y = _images((B, 28, 28, 1))
    g = fns["input_grad"](params, y)
    chex.assert_shape(g, y.shape)
    chex.assert_tree_all_finite(g)
    magnitude = jnp.abs(g)
    assert float(jnp.mean(magnitude > 1e-6 * jnp.max(magnitude))) > 0.99
    # Full resolution: g is not constant on 2x2 blocks (as an upsampled coarse map would be).
    blocks = g.reshape(B, 14, 2, 14, 2, 1)
    detail = blocks - blocks.mean(axis=(2, 4), keepdims=True)
    assert float(jnp.linalg.norm(detail)) > 0.1 * float(jnp.linalg.norm(g))

    # GroupNorm is per sample: perturbing sample 0 changes f of sample 0 only.
    y_perturbed = y.at[0].set(_images((28, 28, 1), seed=1))
    f, f_perturbed = fns["forward"](params, y), fns["forward"](params, y_perturbed)
    chex.assert_trees_all_close(f_perturbed[1:], f[1:], rtol=1e-6, atol=1e-6)
    assert float(jnp.max(jnp.abs(f_perturbed[0] - f[0]))) > 1e-4


def test_double_backprop_matches_finite_difference():
    params, fns = _net()
    y = _images((4, 12, 12, 1))
    _, grad32 = fns["score_norm_and_grad"](params, y)
    chex.assert_tree_all_finite(grad32)
    assert sum(float(jnp.sum(jnp.abs(x))) for x in jax.tree.leaves(grad32)) > 0

    # Central difference along a random parameter direction, in float64 for a tight tolerance.
    with jax.enable_x64(True):
        flat, unravel = ravel_pytree(jax.tree.map(lambda x: jnp.asarray(x, jnp.float64), params))
        direction = jnp.asarray(np.random.default_rng(0).standard_normal(flat.size))
        y64 = jnp.asarray(y, jnp.float64)
        _, grad64 = fns["score_norm_and_grad"](unravel(flat), y64)
        assert all(x.dtype == jnp.float64 for x in jax.tree.leaves(grad64))
        directional = float(jnp.vdot(ravel_pytree(grad64)[0], direction))
        h = 1e-5
        plus, _ = fns["score_norm_and_grad"](unravel(flat + h * direction), y64)
        minus, _ = fns["score_norm_and_grad"](unravel(flat - h * direction), y64)
        np.testing.assert_allclose(directional, float(plus - minus) / (2 * h), rtol=1e-5)
        assert abs(directional) > 1e-6
        grad64 = jax.tree.map(lambda x: np.asarray(x, np.float32), grad64)
    # The float32 gradient agrees with the float64 one (up to float32 rounding).
    scale = max(float(jnp.max(jnp.abs(x))) for x in jax.tree.leaves(grad64))
    chex.assert_trees_all_close(grad32, grad64, rtol=1e-3, atol=1e-4 * scale)


def test_sigma_conditioning():
    params, fns = _net(sigma_conditioning=True)
    y = _images((B, 13, 11, 1))
    forward = fns["forward"]
    f_low = forward(params, y, jnp.float32(0.1))
    assert float(jnp.max(jnp.abs(forward(params, y, jnp.float32(0.2)) - f_low))) > 1e-4
    chex.assert_trees_all_close(forward(params, y, jnp.full((B,), 0.1)), f_low, rtol=1e-6)
    sigmas = jnp.linspace(0.0, 1.0, B)  # sigma = 0 included: log(0 + 1e-3) is finite
    per_sample = forward(params, y, sigmas)
    chex.assert_tree_all_finite(per_sample)
    one_by_one = jnp.concatenate([forward(params, y[i:i + 1], sigmas[i]) for i in range(B)])
    chex.assert_trees_all_close(per_sample, one_by_one, rtol=1e-5, atol=1e-6)

    # Without conditioning, sigma is accepted and ignored.
    params, fns = _net()
    f = fns["forward"](params, y)
    chex.assert_trees_all_close(fns["forward"](params, y, jnp.float32(0.1)), f, rtol=0, atol=0)
    chex.assert_trees_all_close(fns["forward"](params, y, sigmas), f, rtol=0, atol=0)


def test_sharded_batch_matches_unsharded():
    params, fns = _net()
    y = _images((B, 13, 11, 1))
    sharding = jax.sharding.NamedSharding(jax.make_mesh((8,), ("data",)), jax.P("data"))
    y_sharded = jax.device_put(y, sharding)
    assert len(y_sharded.sharding.device_set) == 8
    for name in ("forward", "input_grad"):
        expected = fns[name](params, y)
        # rtol 1e-5, with an absolute floor at 1e-5 of the largest value for entries near 0
        chex.assert_trees_all_close(fns[name](params, y_sharded), expected, rtol=1e-5,
                                    atol=1e-5 * float(jnp.max(jnp.abs(expected))))


@pytest.mark.parametrize("kwargs,name", [
    (dict(in_channels=0), "in_channels"),
    (dict(in_channels=1.0), "in_channels"),
    (dict(num_classes=0), "num_classes"),
    (dict(num_classes=True), "num_classes"),
    (dict(widths=()), "widths"),
    (dict(widths=4), "widths"),
    (dict(widths=(4, 0)), r"widths\[1\]"),
    (dict(widths=(4, 8.0)), r"widths\[1\]"),
    (dict(blocks_per_stage=0), "blocks_per_stage"),
    (dict(groups=-2), "groups"),
    (dict(sigma_conditioning=1), "sigma_conditioning"),
])
def test_bad_arguments(kwargs, name):
    args = dict(in_channels=1, num_classes=K) | kwargs
    with pytest.raises(ValueError, match=name):
        GradResNet(args.pop("in_channels"), rngs=nnx.Rngs(0), **args)


def test_bad_call_arguments():
    model = GradResNetTiny(1, num_classes=K, sigma_conditioning=True, rngs=nnx.Rngs(0))
    y = _images((2, 8, 8, 1))
    with pytest.raises(ValueError, match="sigma"):
        model(y)
    with pytest.raises(ValueError, match="sigma"):
        model(y, jnp.ones(3))
    with pytest.raises(ValueError, match="in_channels"):
        model(_images((2, 8, 8, 3)))
