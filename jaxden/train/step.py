"""The single jitted update function (big_vision ``update_fn`` style).

One ``jax.jit`` over the global batch: the loss is a mean over a batch sharded on ``data``, so its
gradient is the all-reduced gradient; parameters and optimiser state stay replicated. The state
buffers are donated. The per-step key is ``fold_in(key(seed), step)``: a pure function of the
step, which with step-indexed data makes a resumed run bitwise identical to a straight one.

With ``microbatches = m > 1`` the batch is split into m equal parts whose gradients are
computed one after another in a ``lax.scan`` and averaged (gradient accumulation): the
activations of one part are alive at a time, so peak memory falls about m-fold for
activation-bound steps, for the same update (the mean of equal-size means is the mean). Part j
draws its randomness from ``fold_in(step key, j)``; metrics are the mean over the parts (for a
metric that is a batch maximum, the mean of the parts' maxima).
"""

import jax
import jax.numpy as jnp
import optax
from flax import nnx
from jax.sharding import NamedSharding

from jaxden.train.plugin import LossFn
from jaxden.train.state import State, merge_model


def step_key(seed: int, step: jax.Array) -> jax.Array:
    return jax.random.fold_in(jax.random.key(seed), step)


def check_microbatches(microbatches: int, global_batch_size: int, num_devices: int) -> None:
    """Raise a ValueError naming the fix unless every device's rows split into equal parts."""
    per_device = global_batch_size // num_devices
    if (isinstance(microbatches, bool) or not isinstance(microbatches, int) or microbatches < 1
            or per_device % microbatches):
        raise ValueError(
            f"config.microbatches={microbatches!r} must be an integer >= 1 dividing the "
            f"{per_device} rows per device (batch_size {global_batch_size} over {num_devices} "
            f"device(s)); set --config.microbatches to a divisor of {per_device}.")


def split_microbatches(x: jax.Array, m: int) -> jax.Array:
    """(B, ...) -> (m, B / m, ...): part j holds rows j, m + j, 2 m + j, ... . Under a
    contiguous batch sharding each device keeps its own rows (every part is spread over all
    devices, and nothing moves between them) when m divides the rows per device."""
    sharding = jax.typeof(x).sharding  # explicit batch sharding: JAX does not infer it
    parts = jnp.reshape(x, (x.shape[0] // m, m, *x.shape[1:]), out_sharding=sharding)
    return jnp.moveaxis(parts, 1, 0)


def make_update_fn(
    graphdef: nnx.GraphDef,
    loss_fn: LossFn,
    tx: optax.GradientTransformation,
    seed: int,
    state_sharding,
    replicated: NamedSharding,
    microbatches: int = 1,
):
    """Returns ``update(state, batch) -> (state, metrics)``, jitted, state donated;
    ``microbatches`` as the module docstring says."""

    def loss_and_grads(state: State, batch: dict[str, jax.Array], key: jax.Array):
        def objective(params):
            model = merge_model(graphdef, {"params": params, "rest": state["rest"]})
            return loss_fn(model, batch, key)

        return jax.value_and_grad(objective, has_aux=True)(state["params"])

    def accumulated(state: State, batch: dict[str, jax.Array], key: jax.Array):
        parts = jax.tree.map(lambda x: split_microbatches(x, microbatches), batch)

        def add_part(total, part):
            j, part_batch = part
            (loss, metrics), grads = loss_and_grads(state, part_batch,
                                                    jax.random.fold_in(key, j))
            return jax.tree.map(jnp.add, total, grads), (loss, metrics)

        zeros = jax.tree.map(jnp.zeros_like, state["params"])
        # A loop, not unrolled: unrolled, XLA overlapped the parts (the DLW authors' step at
        # batch 2 in 2 parts: 980 MB of temporaries against 1010 MB whole, 477 MB looped).
        # In a loop body XLA:CPU runs autodiff's convolution gradients on a slow path; the
        # DLW nets' and AddUNet's CPU convolutions avoid it (jaxden.models.conv.
        # conv2d_unit_stride), GradResNet's do not (CE step in 2 parts: 280 against 37 ms).
        total, (losses, metrics) = jax.lax.scan(
            add_part, zeros, (jnp.arange(microbatches), parts))
        mean = lambda v: jnp.mean(v, axis=0)  # noqa: E731
        return (mean(losses), jax.tree.map(mean, metrics)), jax.tree.map(
            lambda g: g / microbatches, total)

    def update(state: State, batch: dict[str, jax.Array]):
        key = step_key(seed, state["step"])
        if microbatches == 1:
            (loss, metrics), grads = loss_and_grads(state, batch, key)
        else:
            (loss, metrics), grads = accumulated(state, batch, key)
        updates, opt_state = tx.update(grads, state["opt_state"], state["params"])
        new_state = {
            **state,
            "step": state["step"] + 1,
            "params": optax.apply_updates(state["params"], updates),
            "opt_state": opt_state,
        }
        metrics = {**metrics, "loss": loss, "grad_norm": optax.tree.norm(grads)}
        return new_state, metrics

    return jax.jit(update, donate_argnums=0, out_shardings=(state_sharding, replicated))
