"""Training state as a plain dict of arrays (big_vision style), built from an NNX module.

``nnx.split`` separates the module into a static graph definition and its arrays; the state keeps
the trainable ``nnx.Param`` leaves and any other variables ("rest", e.g. frozen buffers) as pure
dicts, so that the state is an ordinary pytree that jit, shardings and Orbax all handle.
"""

import jax
import jax.numpy as jnp
import optax
from flax import nnx

State = dict


def split_model(model: nnx.Module) -> tuple[nnx.GraphDef, State]:
    """(graphdef, {"params": ..., "rest": ...}) with pure-dict leaves."""
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    return graphdef, {"params": nnx.to_pure_dict(params), "rest": nnx.to_pure_dict(rest)}


def merge_model(graphdef: nnx.GraphDef, state: State) -> nnx.Module:
    """The module that ``state`` (a train state or its model part) describes."""
    return nnx.merge(graphdef, state["params"], state["rest"])


def init_state(model: nnx.Module, tx: optax.GradientTransformation) -> tuple[nnx.GraphDef, State]:
    """The initial train state: step 0, the model's variables and the optimiser state."""
    graphdef, variables = split_model(model)
    state = {
        "step": jnp.zeros((), jnp.int32),
        **variables,
        "opt_state": tx.init(variables["params"]),
    }
    return graphdef, state


def abstract_like(state: State) -> State:
    """Shape/dtype/sharding placeholders for restoring a checkpoint into ``state``'s layout."""
    return jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), state
    )


def param_count(state: State) -> int:
    return sum(x.size for x in jax.tree.leaves(state["params"]))
