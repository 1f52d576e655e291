"""Tests for the Additive U-Net (jaxden.models.addunet).

Models are the tiny variant (width 4, 2 levels, 1 conv per block) run eagerly on small inputs:
JAX caches each op's compilation, so configurations that share shapes cost almost nothing.
"""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxden.models import AddUNet, AddUNetTiny

SKIPS = ("gated", "add", "concat", "none")
C, L = 4, 2  # AddUNetTiny's width and levels


def _image(channels, h=13, w=18, seed=0):
    return jax.random.uniform(jax.random.key(seed), (2, h, w, channels))


def _num_params(model):
    return sum(x.size for x in jax.tree.leaves(nnx.state(model, nnx.Param)))


def _copy_params(src, dst):
    """Copies into `dst` every parameter it shares with `src` (all but gates present in one)."""
    src_flat = dict(nnx.to_flat_state(nnx.state(src, nnx.Param)))
    dst_paths = {path for path, _ in nnx.to_flat_state(nnx.state(dst, nnx.Param))}
    assert dst_paths - set(src_flat) <= {("beta",)}  # only dst's gates keep their init
    nnx.update(dst, nnx.from_flat_state([(p, src_flat[p]) for p in dst_paths & set(src_flat)]))


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("fixed_resolution", [False, True])
@pytest.mark.parametrize("skip", SKIPS)
def test_output_shape_matches_input_odd_size(skip, fixed_resolution, channels):
    model = AddUNetTiny(channels, skip=skip, fixed_resolution=fixed_resolution,
                        rngs=nnx.Rngs(0))
    y = _image(channels)  # 13 x 18: neither is a multiple of 2^L = 4
    out = model(y)
    chex.assert_shape(out, y.shape)
    chex.assert_tree_all_finite(out)


@pytest.mark.parametrize("fixed_resolution", [False, True])
def test_group_norm_gelu_kernel_schedule(fixed_resolution):
    model = AddUNetTiny(1, norm="group", activation="gelu", kernel_sizes=[5, 3],
                        fixed_resolution=fixed_resolution, rngs=nnx.Rngs(0))
    y = _image(1)
    chex.assert_shape(model(y), y.shape)
    assert model.encoder[0].convs[0].kernel.shape == (5, 5, C, C)
    assert model.decoder[1].convs[0].kernel.shape == (3, 3, C, C)
    assert len(model.encoder[0].norms) == 1


def test_encode_decode_separately():
    model = AddUNetTiny(1, rngs=nnx.Rngs(0))
    y = _image(1)
    features, skips = model.encode(y)
    chex.assert_shape(features, (2, 4, 5, C))  # ceil(13 / 4), ceil(18 / 4)
    chex.assert_shape(skips, [(2, 16, 20, C), (2, 8, 10, C)])  # padded to 16 x 20
    chex.assert_trees_all_close(model.decode(features, skips, y), model(y))


def test_scalar_gates_are_softplus_beta():
    model = AddUNetTiny(1, rngs=nnx.Rngs(0))
    chex.assert_shape(model.gates(), (L,))
    chex.assert_trees_all_close(model.gates(), jnp.ones(L), rtol=1e-6)  # gate_init=1.0
    beta = jnp.array([-1.5, 2.0])
    model.beta[...] = beta
    chex.assert_trees_all_close(model.gates(), jnp.log1p(jnp.exp(beta)), rtol=1e-6)


def test_gate_init():
    model = AddUNetTiny(1, gate_init=0.25, rngs=nnx.Rngs(0))
    chex.assert_trees_all_close(model.gates(), jnp.full(L, 0.25), rtol=1e-6)


def test_channel_gates():
    model = AddUNetTiny(1, gate="channel", gate_init=0.5, rngs=nnx.Rngs(0))
    chex.assert_shape(model.gates(), (L, C))
    chex.assert_trees_all_close(model.gates(), jnp.full((L, C), 0.5), rtol=1e-6)
    beta = jnp.arange(L * C, dtype=jnp.float32).reshape(L, C) - 3.0
    model.beta[...] = beta
    chex.assert_trees_all_close(model.gates(), jax.nn.softplus(beta))


def test_add_gates_are_ones():
    model = AddUNetTiny(1, skip="add", rngs=nnx.Rngs(0))
    np.testing.assert_array_equal(model.gates(), np.ones(L))


@pytest.mark.parametrize("skip", ["concat", "none"])
def test_no_gates(skip):
    model = AddUNetTiny(1, skip=skip, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="no gates"):
        model.gates()
    with pytest.raises(ValueError, match="gate_scale"):
        model(_image(1), gate_scale=jnp.ones(L))


@pytest.mark.parametrize("fixed_resolution", [False, True])
@pytest.mark.parametrize("gate", ["scalar", "channel"])
def test_gate_scale(gate, fixed_resolution):
    gated = AddUNetTiny(1, gate=gate, gate_init=0.7, fixed_resolution=fixed_resolution,
                        rngs=nnx.Rngs(0))
    none = AddUNetTiny(1, skip="none", fixed_resolution=fixed_resolution, rngs=nnx.Rngs(1))
    _copy_params(gated, none)
    y = _image(1)
    chex.assert_trees_all_close(gated(y, gate_scale=jnp.zeros(L)), none(y))
    chex.assert_trees_all_equal(gated(y, gate_scale=jnp.ones(L)), gated(y))
    # Scaling one level's gate changes the output.
    assert not np.allclose(gated(y, gate_scale=jnp.array([1.0, 2.0])), gated(y))


def test_gate_scale_add_equals_gated_with_scaled_gates():
    add = AddUNetTiny(1, skip="add", rngs=nnx.Rngs(0))
    gated = AddUNetTiny(1, skip="gated", gate_init=0.5, rngs=nnx.Rngs(1))
    _copy_params(add, gated)
    y = _image(1)
    chex.assert_trees_all_close(add(y, gate_scale=jnp.full(L, 0.5)), gated(y), rtol=1e-5)


def _expected_params(in_ch, width, levels, convs, k, skip, gate, fixed_resolution):
    """Closed-form count: conv k x k from a to b has k^2 a b + b parameters.

    stem + L encoder blocks + L decoder blocks + 1x1 head, plus (standard variant) a
    bottleneck block and L 2x2 transposed convs; concat doubles the input channels of each
    decoder block's first conv; gated adds L (scalar) or L * C (channel) gate parameters.
    """
    conv = lambda a, b, kk: kk * kk * a * b + b  # noqa: E731
    block = lambda a: conv(a, width, k) + (convs - 1) * conv(width, width, k)  # noqa: E731
    n = conv(in_ch, width, k) + levels * block(width) + conv(width, in_ch, 1)
    n += levels * block(2 * width if skip == "concat" else width)
    if not fixed_resolution:
        n += block(width) + levels * conv(width, width, 2)
    if skip == "gated":
        n += levels * (1 if gate == "scalar" else width)
    return n


@pytest.mark.parametrize("fixed_resolution", [False, True])
def test_parameter_counts(fixed_resolution):
    def count(**kw):
        return _num_params(nnx.eval_shape(
            lambda: AddUNetTiny(1, fixed_resolution=fixed_resolution, rngs=nnx.Rngs(0), **kw)))

    n = {skip: count(skip=skip) for skip in SKIPS}
    n["channel"] = count(skip="gated", gate="channel")
    assert n["none"] == n["add"]
    assert n["gated"] == n["add"] + L
    assert n["channel"] == n["add"] + L * C
    assert n["concat"] == n["add"] + L * 3 * 3 * C * C
    for skip in SKIPS:
        assert n[skip] == _expected_params(1, C, L, 1, 3, skip, "scalar", fixed_resolution)


def test_default_parameter_counts():
    def count(**kw):
        return _num_params(nnx.eval_shape(lambda: AddUNet(1, rngs=nnx.Rngs(0), **kw)))

    expected = {"gated": 142_212, "add": 142_209, "concat": 169_857, "none": 142_209}
    assert {skip: count(skip=skip) for skip in SKIPS} == expected
    assert count(gate="channel") == 142_209 + 3 * 32
    assert count(fixed_resolution=True) == 111_332
    for skip in SKIPS:
        assert expected[skip] == _expected_params(1, 32, 3, 2, 3, skip, "scalar", False)


def test_parameters_float32_and_head_bias_zero():
    model = AddUNetTiny(3, rngs=nnx.Rngs(0))
    assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(nnx.state(model, nnx.Param)))
    np.testing.assert_array_equal(model.head.bias[...], np.zeros(3))


@pytest.mark.parametrize("fixed_resolution", [False, True])
def test_residual_returns_y_minus_net(fixed_resolution):
    res = AddUNetTiny(1, fixed_resolution=fixed_resolution, rngs=nnx.Rngs(0))
    direct = AddUNetTiny(1, residual=False, fixed_resolution=fixed_resolution,
                         rngs=nnx.Rngs(1))
    _copy_params(res, direct)
    y = _image(1)
    chex.assert_trees_all_close(res(y), y - direct(y), atol=1e-6)


def test_jit_split_merge_and_beta_gradient():
    model = AddUNetTiny(1, rngs=nnx.Rngs(0))
    graphdef, state = nnx.split(model)
    y, x = _image(1, seed=1), _image(1, seed=2)

    @jax.jit
    def loss_fn(state, y, x):
        return jnp.mean((nnx.merge(graphdef, state)(y) - x) ** 2)

    @jax.jit
    def forward(state, y):
        return nnx.merge(graphdef, state)(y)

    chex.assert_trees_all_close(forward(state, y), model(y), atol=1e-6)
    grads = jax.grad(loss_fn)(state, y, x)
    beta_grad = grads["beta"][...]
    chex.assert_shape(beta_grad, (L,))
    assert np.all(np.isfinite(beta_grad)) and np.all(beta_grad != 0)
    chex.assert_tree_all_finite(grads)


@pytest.mark.parametrize("kwargs, match", [
    ({"skip": "mul"}, "'gated', 'add', 'concat', 'none'"),
    ({"gate": "vector"}, "'scalar', 'channel'"),
    ({"norm": "batch"}, "'none', 'group'"),
    ({"activation": "tanh"}, "'relu', 'gelu'"),
    ({"levels": 0}, "levels must be a positive integer"),
    ({"levels": 2.5}, "levels must be a positive integer"),
    ({"kernel_sizes": (3,)}, "kernel_sizes must hold 2 odd"),
    ({"kernel_sizes": (3, 4)}, "kernel_sizes must hold 2 odd"),
    ({"gate_init": 0.0}, "gate_init must be > 0"),
    ({"out_channels": 3}, "out_channels"),
])
def test_bad_config_raises(kwargs, match):
    with pytest.raises(ValueError, match=match):
        AddUNetTiny(1, rngs=nnx.Rngs(0), **kwargs)
