"""The single jitted update function (big_vision ``update_fn`` style).

One ``jax.jit`` over the global batch: the loss is a mean over a batch sharded on ``data``, so its
gradient is the all-reduced gradient; parameters and optimiser state stay replicated. The state
buffers are donated. The per-step key is ``fold_in(key(seed), step)``: a pure function of the
step, which with step-indexed data makes a resumed run bitwise identical to a straight one.
"""

import jax
import optax
from flax import nnx
from jax.sharding import NamedSharding

from jaxden.train.plugin import LossFn
from jaxden.train.state import State, merge_model


def step_key(seed: int, step: jax.Array) -> jax.Array:
    return jax.random.fold_in(jax.random.key(seed), step)


def make_update_fn(
    graphdef: nnx.GraphDef,
    loss_fn: LossFn,
    tx: optax.GradientTransformation,
    seed: int,
    state_sharding,
    replicated: NamedSharding,
):
    """Returns ``update(state, batch) -> (state, metrics)``, jitted, state donated."""

    def update(state: State, batch: dict[str, jax.Array]):
        key = step_key(seed, state["step"])

        def objective(params):
            model = merge_model(graphdef, {"params": params, "rest": state["rest"]})
            return loss_fn(model, batch, key)

        (loss, metrics), grads = jax.value_and_grad(objective, has_aux=True)(state["params"])
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
