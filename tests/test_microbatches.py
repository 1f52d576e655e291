"""Gradient accumulation (``config.microbatches``): the same update as one whole batch."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from jaxden.models import GradResNetTiny
from jaxden.train import mesh as mesh_lib
from jaxden.train.state import init_state
from jaxden.train.step import check_microbatches, make_update_fn, split_microbatches

BATCH = 16


class _Net(nnx.Module):
    def __init__(self, rngs):
        self.hidden = nnx.Linear(3, 8, rngs=rngs)
        self.out = nnx.Linear(8, 2, rngs=rngs)

    def __call__(self, x):
        return self.out(jnp.tanh(self.hidden(x)))


def _loss(model, batch, key):
    del key  # deterministic, so that every split sees the same data
    error = model(batch["x"]) - batch["y"]
    return jnp.mean(error ** 2), {"max_error": jnp.max(jnp.abs(error))}


def _dsm_like_loss(model, batch, key):
    """A double backprop through a GradResNet (its convolutions' custom VJPs on CPU):
    the squared Tweedie-style residual of its input gradient."""
    del key
    y = batch["x"]

    def energy(y):
        return jnp.sum(jax.nn.logsumexp(model(y), axis=-1))

    denoised = y + jax.grad(energy)(y)
    return jnp.mean((denoised - batch["y"]) ** 2), {}


def _one_update(microbatches, model=None, loss=_loss, shapes=((3,), (2,)), learning_rate=0.1):
    mesh = mesh_lib.data_mesh()
    replicated = mesh_lib.replicated(mesh)
    tx = optax.sgd(learning_rate)
    graphdef, state = init_state(model or _Net(nnx.Rngs(0)), tx)
    state = jax.device_put(state, replicated)
    update = make_update_fn(graphdef, loss, tx, 0, jax.tree.map(lambda x: x.sharding, state),
                            replicated, microbatches)
    rng = np.random.default_rng(0)
    batch = mesh_lib.global_batch(
        {"x": rng.standard_normal((BATCH, *shapes[0]), np.float32),
         "y": rng.standard_normal((BATCH, *shapes[1]), np.float32)},
        mesh_lib.batch_sharded(mesh))
    state, metrics = update(state, batch)
    return jax.device_get(state["params"]), jax.device_get(metrics)


def test_accumulated_update_equals_the_whole_batch():
    assert jax.device_count() == 8  # 16 rows: 2 per device, split in 2 parts of 1
    whole, m_whole = _one_update(1)
    parts, m_parts = _one_update(2)
    np.testing.assert_allclose(m_parts["loss"], m_whole["loss"], rtol=1e-6)
    np.testing.assert_allclose(m_parts["grad_norm"], m_whole["grad_norm"], rtol=1e-5)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7),
                 parts, whole)
    assert m_parts["max_error"] < m_whole["max_error"]  # the mean of the parts' maxima


def test_double_backprop_through_gradresnet_in_parts_equals_the_whole_batch():
    """GradResNet's convolutions (``conv_impl="matmul"``: custom VJPs whose gradients are
    convolutions again) under the batch-sharded mesh, in a microbatch loop, differentiated
    twice: the same update as the whole batch and as XLA's own convolutions."""
    def params_after(microbatches, impl, learning_rate):
        model = GradResNetTiny(1, num_classes=3, conv_impl=impl, rngs=nnx.Rngs(0))
        return _one_update(microbatches, model, _dsm_like_loss, ((6, 5, 1), (6, 5, 1)),
                           learning_rate)[0]

    def step(microbatches, impl):  # the parameters' change, -gradient (learning rate 1)
        return jax.tree.map(jnp.subtract, params_after(microbatches, impl, 1.0), init)

    init = params_after(1, "xla", 0.0)
    reference = step(1, "xla")
    assert max(float(jnp.max(jnp.abs(g))) for g in jax.tree.leaves(reference)) > 1e-4
    for microbatches in (1, 2):
        jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-8),
                     step(microbatches, "matmul"), reference)


def test_split_keeps_rows_on_their_device():
    mesh = mesh_lib.data_mesh()
    x = jax.device_put(jnp.arange(BATCH * 2.0).reshape(BATCH, 2), mesh_lib.batch_sharded(mesh))
    parts = jax.jit(lambda x: split_microbatches(x, 2))(x)
    np.testing.assert_array_equal(parts[1], np.asarray(x)[1::2])
    assert parts.sharding.spec[:2] == (None, mesh_lib.DATA_AXIS)
    for shard in parts.addressable_shards:  # device d holds rows 2d, 2d + 1 of the batch
        device = jax.devices().index(shard.device)
        np.testing.assert_array_equal(np.asarray(shard.data)[:, 0, 0],
                                      [4 * device, 4 * device + 2])


@pytest.mark.parametrize("bad", [0, 3, 2.0, True])
def test_bad_microbatches_name_the_fix(bad):
    with pytest.raises(ValueError, match="set --config.microbatches to a divisor of 2"):
        check_microbatches(bad, BATCH, 8)
    check_microbatches(2, BATCH, 8)
