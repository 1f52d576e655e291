"""Sharding helpers for pure functions that ``vmap`` over a batch."""

import jax


def sharded_like(a: jax.Array, x: jax.Array) -> jax.Array:
    """``a`` (n, ...) split along its leading axis as ``x`` (n, ...) is, when x carries an
    explicit sharding in its type (a batch sharded over a ``jax.make_mesh`` mesh, inside
    ``jit``): ``jax.vmap`` needs the mapped inputs sharded alike, and arrays made inside the
    function (keys, broadcast parameters) are not. Otherwise ``a`` itself."""
    sharding = jax.typeof(x).sharding
    mesh = getattr(sharding, "mesh", None)
    if mesh is None or mesh.empty or not sharding.spec or sharding.spec[0] is None:
        return a
    if jax.typeof(a).sharding.spec[:1] == sharding.spec[:1]:
        return a
    return jax.sharding.reshard(a, jax.sharding.NamedSharding(mesh, jax.P(sharding.spec[0])))


def per_device(fn, *batches):
    """``fn(*batches)`` with every batch (n, ...) split along its leading axis as the first
    one is: under an explicit batch sharding, each device runs ``fn`` on its own rows
    (``jax.shard_map``), so per-sample code with loops and ``vmap`` inside (e.g. iterative
    solvers) sees plain local arrays; otherwise a plain call. ``fn`` must be per-sample and
    return arrays (or a pytree of them) with the same leading axis."""
    sharding = jax.typeof(batches[0]).sharding
    mesh = getattr(sharding, "mesh", None)
    if mesh is None or mesh.empty or not sharding.spec or sharding.spec[0] is None:
        return fn(*batches)
    spec = jax.P(sharding.spec[0])
    return jax.shard_map(fn, mesh=mesh, in_specs=(spec,) * len(batches), out_specs=spec,
                         check_vma=False)(
        *(sharded_like(b, batches[0]) for b in batches))
