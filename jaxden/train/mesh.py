"""Device mesh and shardings for data parallelism (flax `04_data_parallel_with_jit.py` style).

One mesh axis, ``data``, over every device of every process. Parameters and optimiser state are
replicated; batches are split along their leading axis. No ``pmap``: one ``jax.jit`` with
``NamedSharding`` in- and out-shardings, and XLA inserts the gradient all-reduce.
"""

import jax
import numpy as np
from jax.sharding import NamedSharding

DATA_AXIS = "data"


def data_mesh() -> jax.sharding.Mesh:
    """A 1-D mesh named ``data`` over all devices (``jax.device_count()``, all processes)."""
    return jax.make_mesh((jax.device_count(),), (DATA_AXIS,))


def replicated(mesh: jax.sharding.Mesh) -> NamedSharding:
    return NamedSharding(mesh, jax.P())


def batch_sharded(mesh: jax.sharding.Mesh) -> NamedSharding:
    return NamedSharding(mesh, jax.P(DATA_AXIS))


def check_batch_size(global_batch_size: int, mesh: jax.sharding.Mesh) -> None:
    """Raise a ValueError naming the fix when the batch does not split evenly over devices."""
    n = mesh.size
    if global_batch_size % n:
        raise ValueError(
            f"config.batch_size={global_batch_size} is not divisible by the {n} devices; "
            f"set --config.batch_size to a multiple of {n} "
            f"(e.g. {n * max(1, global_batch_size // n)})."
        )


def global_batch(local: dict[str, np.ndarray], sharding: NamedSharding) -> dict[str, jax.Array]:
    """Assemble a global, data-sharded batch from this process's rows of it."""
    return {k: jax.make_array_from_process_local_data(sharding, v) for k, v in local.items()}
