"""Tests for the DLW weight networks (jaxden.models.dlwnet).

Most tests use the tiny variants (depth 3, 4 features). Each model configuration is built once
and split into (graphdef, params); its jitted functions are shared by the tests, and jit only
recompiles for a new shape or sharding.
"""

import functools

import chex
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from flax import nnx

from jaxden.models import MODELS, build_model
from jaxden.models.dlwnet import (NORMALIZATIONS, WEIGHT_FLOOR, DLWNet, DLWNet3D, DLWNet3DTiny,
                                  DLWNetTiny, normalize_weights)

B = 8  # batch: one sample per simulated device
H, W = 9, 7  # odd on purpose
TINY = {"2d": DLWNetTiny, "3d": DLWNet3DTiny}
FULL = {"2d": DLWNet, "3d": DLWNet3D}
RADIUS = 3  # receptive-field radius of both tiny nets (depth 3): 3 pixels, and 3 bands in 3-D


def _images(shape, seed=0):
    return jax.random.uniform(jax.random.key(seed), shape)


@functools.cache
def _net(kind, in_channels, normalization="softmax"):
    """(params, jitted functions) of a tiny model; built and compiled once per configuration."""
    model = TINY[kind](in_channels, normalization=normalization, rngs=nnx.Rngs(0))
    graphdef, params = nnx.split(model)

    def forward(params, y):
        return nnx.merge(graphdef, params)(y)

    def raw(params, y):
        return nnx.merge(graphdef, params).raw(y)

    def fidelity(params, y, x):  # the weighted fidelity of DLW, averaged over the batch
        return 0.5 * jnp.sum(forward(params, y) * (y - x) ** 2) / y.shape[0]

    fns = dict(forward=jax.jit(forward), raw=jax.jit(raw),
               fidelity_grad=jax.jit(jax.value_and_grad(fidelity, argnums=(0, 1))))
    return params, fns


def _count(params):
    return sum(x.size for x in jax.tree.leaves(params))


@pytest.mark.parametrize("kind", ["2d", "3d"])
@pytest.mark.parametrize("channels", [1, 3, 31])
def test_shape_positive_and_mean_one(kind, channels):
    params, fns = _net(kind, channels)
    weights = fns["forward"](params, _images((B, H, W, channels)))
    chex.assert_shape(weights, (B, H, W, channels))
    chex.assert_tree_all_finite(weights)
    assert float(jnp.min(weights)) >= WEIGHT_FLOOR * (1 - 1e-6)
    # "softmax": the mean weight of every image is 1 + 1e-4
    np.testing.assert_allclose(jnp.mean(weights, axis=(1, 2, 3)), 1 + WEIGHT_FLOOR, rtol=1e-5)
    assert float(jnp.std(weights)) > 1e-3  # not a constant map


def test_normalize_weights():
    raw = 3.0 * jax.random.normal(jax.random.key(1), (2, 5, 4, 3))
    count = 5 * 4 * 3
    flat = raw.reshape(2, -1)
    softmax = (jnp.exp(flat) / jnp.sum(jnp.exp(flat), axis=1, keepdims=True)).reshape(raw.shape)
    expected = {"softmax": softmax * count + 1e-4,
                "softplus": jnp.log1p(jnp.exp(raw)) + 1e-4,
                "sigmoid": 2 / (1 + jnp.exp(-raw)) + 1e-4}
    assert set(expected) == set(NORMALIZATIONS)
    for name, value in expected.items():
        chex.assert_trees_all_close(normalize_weights(raw, name), value, rtol=1e-5, atol=1e-6)
    # sigmoid starts at 1 (+1e-4) for r = 0, like softmax's mean
    chex.assert_trees_all_close(normalize_weights(jnp.zeros((1, 2, 2, 1)), "sigmoid"),
                                jnp.full((1, 2, 2, 1), 1 + 1e-4))
    # extreme raw values stay finite and >= 1e-4
    extreme = jnp.array([-1e4, -50.0, 0.0, 50.0, 1e4]).reshape(1, 5, 1, 1)
    for name in NORMALIZATIONS:
        weights = normalize_weights(extreme, name)
        chex.assert_tree_all_finite(weights)
        assert float(jnp.min(weights)) >= WEIGHT_FLOOR * (1 - 1e-6)
    with pytest.raises(ValueError, match="normalization"):
        normalize_weights(raw, "exp")


@pytest.mark.parametrize("normalization", ["softplus", "sigmoid"])
def test_other_normalizations_in_model(normalization):
    params, fns = _net("2d", 1, normalization)
    y = _images((B, H, W, 1))
    weights = fns["forward"](params, y)
    chex.assert_trees_all_close(weights, normalize_weights(fns["raw"](params, y), normalization),
                                rtol=1e-6)
    assert float(jnp.min(weights)) > 0


def test_param_counts():
    # 2-D tiny (depth 3, 4 features): conv3x3 C->4, conv3x3 4->4, conv3x3 4->C, with biases
    for c in (1, 3):
        expected = (9 * c * 4 + 4) + (9 * 4 * 4 + 4) + (9 * 4 * c + c)
        assert _count(_net("2d", c)[0]) == expected
    assert _count(_net("2d", 1)[0]) == 40 + 148 + 37  # 225
    # 3-D tiny: (1,3,3) 1->4, (3,1,1) 4->4, one mid pair (1,3,3) 4->4 + (3,1,1) 4->4,
    # (3,3,3) 4->1; the same for any number of bands
    expected = (9 * 4 + 4) + (3 * 16 + 4) + (9 * 16 + 4) + (3 * 16 + 4) + (27 * 4 + 1)
    assert expected == 401
    for c in (1, 3, 31):
        assert _count(_net("3d", c)[0]) == expected
    # full size, without materialising: the authors' HWnet(dep=4) has 113,281 parameters
    # (conv1 640 + conv2 12,352 + 2 x (36,928 + 12,352) + conv_last 1,729)
    full3d = nnx.eval_shape(lambda: DLWNet3D(31, rngs=nnx.Rngs(0)))
    assert _count(nnx.state(full3d, nnx.Param)) == 113_281
    # HWnet2D(dep=5), C = 1: 640 + 3 x 36,928 + 577
    full2d = nnx.eval_shape(lambda: DLWNet(1, rngs=nnx.Rngs(0)))
    assert _count(nnx.state(full2d, nnx.Param)) == 112_001


def test_3d_parameters_do_not_depend_on_bands():
    a = nnx.state(DLWNet3DTiny(3, rngs=nnx.Rngs(0)), nnx.Param)
    b = nnx.state(DLWNet3DTiny(31, rngs=nnx.Rngs(0)), nnx.Param)
    chex.assert_trees_all_equal(a, b)


def test_kaiming_init():
    model = DLWNet(1, rngs=nnx.Rngs(0))
    for conv in model.convs:
        assert float(jnp.max(jnp.abs(conv.bias[...]))) == 0.0
    kernel = model.convs[1].kernel[...]  # 3x3, 64 -> 64: fan_in 576, std sqrt(2 / 576)
    np.testing.assert_allclose(float(jnp.std(kernel)), np.sqrt(2 / 576), rtol=0.03)
    assert float(jnp.max(jnp.abs(kernel))) > 3.5 * np.sqrt(2 / 576)  # untruncated normal


@pytest.mark.parametrize("kind", ["2d", "3d"])
def test_samples_independent(kind):
    params, fns = _net(kind, 3)
    y = _images((B, H, W, 3))
    weights = fns["forward"](params, y)
    changed = fns["forward"](params, y.at[5].set(_images((H, W, 3), seed=7)))
    diff = jnp.max(jnp.abs(changed - weights), axis=(1, 2, 3))
    assert float(diff[5]) > 1e-3
    assert float(jnp.max(jnp.delete(diff, 5))) == 0.0


@pytest.mark.parametrize("kind,channels", [("2d", 1), ("3d", 13)])
def test_receptive_field_and_translation_equivariance(kind, channels):
    params, fns = _net(kind, channels)
    size = 15
    y = _images((2, size, size, channels), seed=3)
    raw = fns["raw"](params, y)
    centre = (size // 2, size // 2, channels // 2)
    bumped = fns["raw"](params, y.at[0, centre[0], centre[1], centre[2]].add(0.5))
    changed = np.asarray(jnp.abs(bumped - raw) > 0)
    assert not changed[1].any()  # the other image
    idx = np.argwhere(changed[0])
    distance = np.abs(idx - np.array(centre))
    radius = distance.max(axis=0)  # per axis (h, w, c)
    assert tuple(radius[:2]) == (RADIUS, RADIUS)
    # 2-D: channels are features, so every channel sees the bump; 3-D: RADIUS bands either way
    assert radius[2] == (0 if channels == 1 else RADIUS)
    # translation equivariance of the raw map (zero padding: compare away from the borders)
    shift = (2, 1, 1 if kind == "3d" else 0)
    shifted = fns["raw"](params, jnp.roll(y, shift, axis=(1, 2, 3)))
    margin = RADIUS + 2
    inner = np.s_[:, margin:size - margin, margin:size - margin]
    if kind == "3d":
        inner = inner + (np.s_[margin:channels - margin],)
    chex.assert_trees_all_close(shifted[inner], jnp.roll(raw, shift, axis=(1, 2, 3))[inner],
                                rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("kind", ["2d", "3d"])
def test_gradients_finite(kind):
    params, fns = _net(kind, 3)
    y = _images((B, H, W, 3))
    x = jnp.clip(y + 0.1 * jax.random.normal(jax.random.key(2), y.shape), 0, 1)
    value, (param_grads, y_grad) = fns["fidelity_grad"](params, y, x)
    assert np.isfinite(float(value))
    chex.assert_tree_all_finite((param_grads, y_grad))
    for leaf in jax.tree.leaves(param_grads):
        assert float(jnp.max(jnp.abs(leaf))) > 0


@pytest.mark.parametrize("kind", ["2d", "3d"])
def test_sharded_batch_matches_unsharded(kind):
    params, fns = _net(kind, 3)
    y = _images((B, H, W, 3))
    x = 0.5 * y
    mesh = jax.make_mesh((8,), ("data",))  # Explicit axis type, like jaxden.train.mesh
    sharding = jax.sharding.NamedSharding(mesh, jax.P("data"))
    y_sharded, x_sharded = jax.device_put((y, x), sharding)
    # as in the trainer, parameters are replicated over the mesh (with single-device
    # parameters the conv weight gradient's batch contraction has no output sharding)
    params_replicated = jax.device_put(params, jax.sharding.NamedSharding(mesh, jax.P()))
    assert len(y_sharded.sharding.device_set) == 8
    weights = fns["forward"](params_replicated, y_sharded)
    assert weights.sharding.is_equivalent_to(sharding, weights.ndim)
    chex.assert_trees_all_close(weights, fns["forward"](params, y), rtol=1e-5, atol=1e-6)
    expected = fns["fidelity_grad"](params, y, x)
    got = fns["fidelity_grad"](params_replicated, y_sharded, x_sharded)
    assert got[1][1].sharding.is_equivalent_to(sharding, 4)  # d/dy stays batch-sharded
    chex.assert_trees_all_close(got, expected, rtol=1e-4,
                                atol=1e-5 * float(jnp.max(jnp.abs(expected[1][1]))))


@pytest.mark.parametrize("cls", [DLWNet, DLWNet3D])
@pytest.mark.parametrize("kwargs,name", [
    (dict(in_channels=0), "in_channels"),
    (dict(in_channels=1.0), "in_channels"),
    (dict(depth=1), "depth"),
    (dict(depth=3.0), "depth"),
    (dict(features=0), "features"),
    (dict(features=True), "features"),
    (dict(normalization="exp"), "normalization.*softmax"),
])
def test_bad_arguments(cls, kwargs, name):
    args = dict(in_channels=1, depth=2, features=2) | kwargs
    with pytest.raises(ValueError, match=name):
        cls(args.pop("in_channels"), rngs=nnx.Rngs(0), **args)


@pytest.mark.parametrize("kind", ["2d", "3d"])
def test_bad_call_arguments(kind):
    model = TINY[kind](3, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="in_channels=3"):
        model(_images((1, 5, 5, 1)))
    with pytest.raises(AssertionError):  # chex: rank 4 expected
        model(_images((5, 5, 3)))


def test_build_model():
    assert {"dlwnet", "dlwnet_tiny", "dlwnet3d", "dlwnet3d_tiny"} <= set(MODELS)
    config = ml_collections.ConfigDict(dict(name="dlwnet_tiny", normalization="softplus"))
    model = build_model(config, in_channels=3, rngs=nnx.Rngs(0))
    assert isinstance(model, DLWNet) and model.normalization == "softplus"
    assert model.in_channels == 3 and model.depth == 3
    config = ml_collections.ConfigDict(dict(name="dlwnet3d", depth=2, features=2))
    model = build_model(config, in_channels=31, rngs=nnx.Rngs(0))
    assert isinstance(model, DLWNet3D) and len(model.convs) == 3
    assert _count(nnx.state(model, nnx.Param)) == (9 * 2 + 2) + (3 * 4 + 2) + (27 * 2 + 1)
