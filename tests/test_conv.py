"""jaxden.models.conv: strided convolutions as im2col matmuls equal XLA's convolutions in
value, gradient and second-order gradient (float64 oracle: lax.conv_general_dilated), and a
GradResNet gives the same scores and DSM-style double-backprop gradients with either. The
matmul ConvTranspose and the strided max-pool equal nnx.ConvTranspose and nnx.max_pool, and
3-D convolutions computed as 2-D ones equal XLA's 3-D convolutions."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from jax import lax

from jaxden.models.conv import (ConvTranspose, conv2d_unit_stride, conv3d_as_2d,
                                conv3d_function, conv_function,
                                conv_strided_as_matmul, max_pool)
from jaxden.models.energy import GradResNetTiny

NHWC = ("NHWC", "HWIO", "NHWC")


def _xla(x, w, strides, padding):
    return lax.conv_general_dilated(x, w, strides, padding, dimension_numbers=NHWC)


def _matmul(x, w, strides, padding):
    return conv_strided_as_matmul(x, w, strides, padding, dimension_numbers=NHWC)


def _second_order(conv, x, w, strides, padding):
    """d/dw of ||d/dx <conv(x, w), u>||^2: the double backprop of score matching."""
    u = jnp.cos(jnp.arange(conv(x, w, strides, padding).size)).reshape(
        conv(x, w, strides, padding).shape)

    def input_grad(w, x):
        return jax.grad(lambda x: jnp.sum(jnp.tanh(conv(x, w, strides, padding)) * u))(x)

    return jax.grad(lambda w: jnp.sum(input_grad(w, x) ** 2))(w)


@pytest.mark.parametrize("hw,kernel,padding,strides", [
    ((28, 28), 3, "SAME", (2, 2)),  # GradResNet's downsampling conv on Fashion-MNIST
    ((7, 7), 1, "SAME", (2, 2)),  # its 1x1 shortcut, odd size
    ((13, 10), 3, "VALID", (2, 2)),
    ((13, 10), 3, ((1, 2), (0, 1)), (2, 1)),
    ((8, 9), 1, ((0, 1), (1, 0)), (3, 2)),
    ((8, 9), 1, "SAME", (1, 1)),  # AddUNet's 1x1 head: one matmul
    ((8, 9), 1, ((1, 0), (0, 2)), (1, 1)),
])
def test_matches_xla_to_second_order(hw, kernel, padding, strides):
    with jax.enable_x64():
        x = jax.random.normal(jax.random.key(0), (2, *hw, 3), jnp.float64)
        w = jax.random.normal(jax.random.key(1), (kernel, kernel, 3, 5), jnp.float64)
        np.testing.assert_allclose(_matmul(x, w, strides, padding),
                                   _xla(x, w, strides, padding), rtol=0, atol=1e-12)
        g_ref = jax.grad(lambda x, w: jnp.sum(jnp.sin(_xla(x, w, strides, padding))),
                         argnums=(0, 1))(x, w)
        g = jax.grad(lambda x, w: jnp.sum(jnp.sin(_matmul(x, w, strides, padding))),
                     argnums=(0, 1))(x, w)
        for a, b in zip(g, g_ref):
            np.testing.assert_allclose(a, b, rtol=0, atol=1e-11)
        np.testing.assert_allclose(_second_order(_matmul, x, w, strides, padding),
                                   _second_order(_xla, x, w, strides, padding),
                                   rtol=1e-11, atol=1e-10)


def test_unit_stride_and_other_layouts_match_xla():
    x = jnp.ones((1, 6, 6, 2))
    w = jnp.ones((3, 3, 2, 4))
    np.testing.assert_array_equal(_matmul(x, w, (1, 1), "SAME"), _xla(x, w, (1, 1), "SAME"))
    nchw = ("NCHW", "OIHW", "NCHW")
    xc, wc = jnp.transpose(x, (0, 3, 1, 2)), jnp.transpose(w, (3, 2, 0, 1))
    np.testing.assert_array_equal(
        conv_strided_as_matmul(xc, wc, (2, 2), "SAME", dimension_numbers=nchw),
        lax.conv_general_dilated(xc, wc, (2, 2), "SAME", dimension_numbers=nchw))


def test_conv_function_names():
    assert conv_function("xla") is lax.conv_general_dilated
    assert conv_function("matmul") is conv_strided_as_matmul
    expected = conv_strided_as_matmul if jax.default_backend() == "cpu" else (
        lax.conv_general_dilated)
    assert conv_function("auto") is expected
    with pytest.raises(ValueError, match="conv_impl='im2col'.*choose one of"):
        conv_function("im2col")


def test_gradresnet_same_function_either_way():
    """Same parameters (the kernels are HWIO either way), same f, same double-backprop
    gradient in the parameters."""
    with jax.enable_x64():
        models = [GradResNetTiny(1, num_classes=3, sigma_conditioning=True, conv_impl=impl,
                                 rngs=nnx.Rngs(0)) for impl in ("xla", "matmul")]
        y = jax.random.uniform(jax.random.key(2), (2, 11, 9, 1), jnp.float64)
        sigma = jnp.array([0.1, 0.3])
        outs = []
        for model in models:
            graphdef, params = nnx.split(model)
            params = jax.tree.map(lambda p: p.astype(jnp.float64), params)

            def dsm_like(params):
                f = lambda y: jnp.sum(jax.nn.logsumexp(nnx.merge(graphdef, params)(y, sigma), -1))
                return jnp.sum((y + sigma[:, None, None, None] ** 2 * jax.grad(f)(y)) ** 2)

            outs.append((nnx.merge(graphdef, params)(y, sigma), jax.grad(dsm_like)(params)))
        np.testing.assert_allclose(outs[0][0], outs[1][0], rtol=1e-12)
        for a, b in zip(jax.tree.leaves(outs[0][1]), jax.tree.leaves(outs[1][1])):
            np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("window,use_bias", [(2, True), (3, False)])
def test_conv_transpose_as_matmul_matches_flax(window, use_bias):
    """Non-overlapping windows (kernel = strides, VALID): value and gradients in the input and
    both parameters equal nnx.ConvTranspose's (lax.conv_transpose) in float64."""
    with jax.enable_x64():
        kwargs = dict(strides=(window, window), padding="VALID", use_bias=use_bias,
                      param_dtype=jnp.float64)
        ref = nnx.ConvTranspose(3, 5, (window, window), rngs=nnx.Rngs(0), **kwargs)
        ours = ConvTranspose(3, 5, (window, window), impl="matmul", rngs=nnx.Rngs(0), **kwargs)
        if use_bias:  # flax starts the bias at zero: make it count
            for layer in (ref, ours):
                layer.bias[...] = jnp.linspace(-1.0, 1.0, 5)
        x = jax.random.normal(jax.random.key(3), (2, 4, 3, 3), jnp.float64)

        def loss(layer, x):
            return jnp.sum(jnp.sin(layer(x)))

        np.testing.assert_allclose(ours(x), ref(x), rtol=0, atol=1e-13)
        g_ours = nnx.grad(loss, argnums=(0, 1))(ours, x)
        g_ref = nnx.grad(loss, argnums=(0, 1))(ref, x)
        for a, b in zip(jax.tree.leaves(g_ours), jax.tree.leaves(g_ref)):
            np.testing.assert_allclose(a, b, rtol=0, atol=1e-12)


def test_conv_transpose_other_cases_go_to_flax():
    """Overlapping windows and impl="xla" use nnx.ConvTranspose's own call; a bad impl is one
    clear error."""
    x = jax.random.normal(jax.random.key(4), (1, 4, 4, 2))
    for size, strides, impl in [((3, 3), (2, 2), "matmul"), ((2, 2), (2, 2), "xla")]:
        ours = ConvTranspose(2, 3, size, strides=strides, padding="VALID", impl=impl,
                             rngs=nnx.Rngs(0))
        assert not ours._as_matmul(x)
        ref = nnx.ConvTranspose(2, 3, size, strides=strides, padding="VALID", rngs=nnx.Rngs(0))
        np.testing.assert_array_equal(ours(x), ref(x))
    with pytest.raises(ValueError, match="conv_impl='fft'.*choose one of"):
        ConvTranspose(2, 3, (2, 2), strides=(2, 2), impl="fft", rngs=nnx.Rngs(0))


def test_max_pool_matches_flax():
    """Same values; same gradient where the maxima are unique (random inputs); odd sizes fall
    back to nnx.max_pool."""
    x = jax.random.normal(jax.random.key(5), (2, 6, 8, 3))
    ref = lambda x: nnx.max_pool(x, (2, 2), strides=(2, 2))
    np.testing.assert_array_equal(max_pool(x, 2), ref(x))
    np.testing.assert_array_equal(jax.grad(lambda x: jnp.sum(max_pool(x, 2) ** 2))(x),
                                  jax.grad(lambda x: jnp.sum(ref(x) ** 2))(x))
    odd = x[:, :5]
    np.testing.assert_array_equal(max_pool(odd, 2), ref(odd))
    t = jax.random.normal(jax.random.key(6), x.shape)
    np.testing.assert_array_equal(jax.jvp(lambda x: max_pool(x, 2), (x,), (t,))[1],
                                  jax.jvp(ref, (x,), (t,))[1])


def test_max_pool_splits_ties_equally():
    """A window of equal maxima shares the gradient equally (1/4 each for a 2x2 window, 1/2
    each for a tie of two), in a first and a second derivative."""
    x = jnp.zeros((1, 4, 4, 1)).at[0, 0, 0, 0].set(-1.0).at[0, 2:, 2:, 0].set([[3, 3], [1, 2]])
    grad = jax.grad(lambda x: jnp.sum(max_pool(x, 2)))(x)[0, :, :, 0]
    expected = np.full((4, 4), 0.25)
    expected[:2, :2] = [[0, 1 / 3], [1 / 3, 1 / 3]]
    expected[2:, 2:] = [[0.5, 0.5], [0, 0]]
    np.testing.assert_allclose(grad, expected, rtol=1e-6)
    hvp = jax.jvp(jax.grad(lambda x: jnp.sum(max_pool(x, 2) ** 2)), (x,), (jnp.ones_like(x),))[1]
    np.testing.assert_allclose(hvp[0, :, :, 0], 2 * expected, rtol=1e-6)


NDHWC = ("NDHWC", "DHWIO", "NDHWC")


@pytest.mark.parametrize("kernel,padding,features", [
    ((1, 3, 3), "SAME", (3, 4)),  # DLWNet3D's spatial conv
    ((3, 1, 1), "SAME", (3, 4)),  # its spectral conv
    ((3, 3, 3), "SAME", (4, 1)),  # its last conv (fewer outputs: shifted outputs)
    ((3, 3, 3), "SAME", (3, 4)),  # more outputs: shifted inputs
    ((2, 3, 1), ((1, 0), (0, 2), (1, 1)), (3, 4)),
    ((2, 3, 1), ((1, 0), (0, 2), (1, 1)), (4, 2)),
    ((3, 1, 1), "VALID", (3, 4)),
])
def test_conv3d_as_2d_matches_xla(kernel, padding, features):
    """Values and gradients in the input and the kernel, float64 (oracle: XLA's 3-D conv)."""
    c_in, c_out = features
    with jax.enable_x64():
        x = jax.random.normal(jax.random.key(0), (2, 5, 6, 7, c_in), jnp.float64)
        w = jax.random.normal(jax.random.key(1), (*kernel, c_in, c_out), jnp.float64)

        def ours(x, w):
            return conv3d_as_2d(x, w, (1, 1, 1), padding, dimension_numbers=NDHWC)

        def xla(x, w):
            return lax.conv_general_dilated(x, w, (1, 1, 1), padding, dimension_numbers=NDHWC)

        np.testing.assert_allclose(ours(x, w), xla(x, w), rtol=0, atol=1e-12)
        grads = [jax.grad(lambda x, w: jnp.sum(jnp.sin(f(x, w))), argnums=(0, 1))(x, w)
                 for f in (ours, xla)]
        for a, b in zip(*grads):
            np.testing.assert_allclose(a, b, rtol=0, atol=1e-11)


@pytest.mark.parametrize("kernel,padding", [((3, 3), "SAME"), ((2, 3), ((1, 0), (0, 2))),
                                            ((3, 1), "VALID")])
def test_conv2d_unit_stride_matches_xla_also_in_a_scan(kernel, padding):
    """Values and gradients (float64) of ``conv2d_unit_stride`` through ``conv3d_as_2d``'s
    2-D case, called in a ``lax.scan`` as the trainer's microbatches call it."""
    with jax.enable_x64():
        x = jax.random.normal(jax.random.key(0), (2, 3, 6, 7, 3), jnp.float64)
        w = jax.random.normal(jax.random.key(1), (*kernel, 3, 4), jnp.float64)

        def summed(conv):
            def loss(x, w):
                def body(total, xi):
                    return total + jnp.sum(jnp.sin(conv(xi, w, (1, 1), padding,
                                                        dimension_numbers=NHWC))), None
                return jax.lax.scan(body, 0.0, x)[0]
            return jax.jit(jax.value_and_grad(loss, argnums=(0, 1)))(x, w)

        ours, xla = summed(conv3d_as_2d), summed(lax.conv_general_dilated)
        np.testing.assert_allclose(ours[0], xla[0], rtol=1e-13)
        for a, b in zip(ours[1], xla[1]):
            np.testing.assert_allclose(a, b, rtol=0, atol=1e-11)
        pads = lax.padtype_to_pads((6, 7), kernel, (1, 1), padding) if isinstance(
            padding, str) else padding
        np.testing.assert_array_equal(conv2d_unit_stride(x[0], w, pads), conv3d_as_2d(
            x[0], w, (1, 1), padding, dimension_numbers=NHWC))


@pytest.mark.parametrize("kernel,padding", [((3, 3), "SAME"), ((2, 3), ((1, 0), (0, 2)))])
def test_conv2d_unit_stride_second_order_matches_xla(kernel, padding):
    """The double backprop of score matching (d/dw of a squared input gradient) and the
    second derivative in x (d/dx of the same), float64: the custom VJP's own derivatives
    (``conv_strided_as_matmul`` sends unit-stride convolutions to ``conv2d_unit_stride``)."""
    with jax.enable_x64():
        x = jax.random.normal(jax.random.key(0), (2, 6, 7, 3), jnp.float64)
        w = jax.random.normal(jax.random.key(1), (*kernel, 3, 4), jnp.float64)
        np.testing.assert_allclose(_second_order(_matmul, x, w, (1, 1), padding),
                                   _second_order(_xla, x, w, (1, 1), padding),
                                   rtol=1e-11, atol=1e-10)

        def input_grad_norm(conv):
            def f(x):
                return jnp.sum(jax.grad(lambda x: jnp.sum(jnp.tanh(conv(x, w, (1, 1), padding))))(
                    x) ** 2)
            return jax.grad(f)(x)

        np.testing.assert_allclose(input_grad_norm(_matmul), input_grad_norm(_xla),
                                   rtol=1e-11, atol=1e-10)


def test_conv3d_other_cases_go_to_xla():
    x = jnp.ones((1, 4, 4, 4, 2))
    w = jnp.ones((3, 3, 3, 2, 2))
    for strides in [(2, 1, 1), (1, 1, 1)]:
        np.testing.assert_array_equal(
            conv3d_as_2d(x, w, strides, "SAME", rhs_dilation=(1, 2, 1),
                         dimension_numbers=NDHWC),
            lax.conv_general_dilated(x, w, strides, "SAME", rhs_dilation=(1, 2, 1),
                                     dimension_numbers=NDHWC))
    assert conv3d_function("xla") is lax.conv_general_dilated
    assert conv3d_function("matmul") is conv3d_as_2d


def test_conv_transpose_as_matmul_under_a_sharded_batch():
    """The trainer's mesh (explicit axes): the depth-to-space reshapes keep the batch
    sharding, and the result equals the unsharded one."""
    from jaxden.train import mesh as mesh_lib

    layer = ConvTranspose(2, 3, (2, 2), strides=(2, 2), padding="VALID", impl="matmul",
                          rngs=nnx.Rngs(0))
    graphdef, state = nnx.split(layer)
    x = jax.random.normal(jax.random.key(6), (8, 3, 5, 2))
    apply = jax.jit(lambda state, x: nnx.merge(graphdef, state)(x))
    mesh = mesh_lib.data_mesh()
    with jax.set_mesh(mesh):
        sharded = apply(jax.device_put(state, mesh_lib.replicated(mesh)),
                        jax.device_put(x, jax.sharding.NamedSharding(mesh, jax.P("data"))))
        assert jax.typeof(sharded).sharding.spec[0] == "data"
    np.testing.assert_allclose(sharded, apply(state, x), rtol=1e-6, atol=1e-6)
