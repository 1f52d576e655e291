"""One full DLW bilevel training step in the authors' setting (issue 6, item 7).

    .venv/bin/python benchmarks/dlw_step.py [--batch 10] [--size 64] [--bands 31] [--repeats 3]
        [--microbatches M] [--breakdown] [--mode unrolled --max_iter 20 [--remat]]

Rui et al., arXiv 2301.06081, code ``xyrui/DLWnet``: batch 10 of 31-band 64x64 patches, the
band-aware 3-D weight net (``DLWNet3D``: depth 4, 64 features), weighted TV lower level, Adam.
Reference figures quoted in the issue for the authors' PyTorch step (3-D net + 20 unrolled ADMM
iterations) on a 2-core CPU: about 66 s and 5.7 GB peak memory. Here: the trainer's jitted
step (``jaxden.train.step.make_update_fn``: the DLW loss with the lower level solved to a
relative residual ``--tol``, its implicit hypergradient, Adam; ``--microbatches`` as
``config.microbatches``) on random smooth 31-band patches with the authors' training noise
("impulse"), median wall time over repeats after one warm-up step; memory: XLA's temporary
buffers of the compiled step (``memory_analysis``) and the process's peak resident set size.
Run one setting per process: the peak resident set size is the process's.
"""

import argparse
import os
import resource
import statistics
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

import optax  # noqa: E402
from flax import nnx  # noqa: E402

from configs import dlw as dlw_configs  # noqa: E402
from jaxden import methods, noise  # noqa: E402
from jaxden.models import build_model  # noqa: E402
from jaxden.train import mesh as mesh_lib  # noqa: E402
from jaxden.train.state import init_state, merge_model  # noqa: E402
from jaxden.train.step import check_microbatches, make_update_fn  # noqa: E402


def smooth_patches(batch, size, bands, seed=0):
    """Random smooth spectra x smooth spatial fields in [0, 1] (hyperspectral-like)."""
    keys = jax.random.split(jax.random.key(seed), 3)
    yy, xx = jnp.meshgrid(jnp.linspace(0, 1, size), jnp.linspace(0, 1, size), indexing="ij")
    freq = jax.random.uniform(keys[0], (batch, 1, 1, 1, 2), minval=1, maxval=6)
    spatial = 0.5 + 0.5 * jnp.sin(freq[..., 0] * yy[None, :, :, None] * 3) * jnp.cos(
        freq[..., 1] * xx[None, :, :, None] * 3)
    spectra = jax.random.uniform(keys[1], (batch, 1, 1, bands), minval=0.2, maxval=1.0)
    return jnp.clip(spatial * spectra, 0, 1)


def median_seconds(fn, *args, repeats):
    jax.block_until_ready(fn(*args))
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def breakdown(graphdef, state, clean, config, repeats):
    """Median times of the step's two parts alone, on one noisy batch of the training noise:
    the weight net's forward + backward (a fixed linear read-out of W), and weighted TV with
    its implicit gradient in W."""
    dlw = config.dlw
    noisy = noise.sample_noise(jax.random.key(1), clean, tuple(config.noise.kinds))

    def weight_net(params):
        return merge_model(graphdef, {"params": params, "rest": state["rest"]})(noisy)

    weights = weight_net(state["params"])

    @jax.jit
    def net(params):
        return jax.grad(lambda p: jnp.sum(weight_net(p) * clean))(params)

    @jax.jit
    def lower_level(weights):
        def loss(w):
            x, _ = methods.dlw.solve("tv", noisy, w, dlw.lam, tol=dlw.tol, max_iter=dlw.max_iter,
                                     mode=dlw.mode, linear_tol=dlw.linear_tol,
                                     remat=dlw.remat)
            return jnp.sum((x - clean) ** 2)
        return jax.grad(loss)(weights)

    print(f"breakdown: weight net forward + backward "
          f"{median_seconds(net, state['params'], repeats=repeats):.2f} s; weighted TV solve + "
          f"hypergradient in W {median_seconds(lower_level, weights, repeats=repeats):.2f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=10)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--bands", type=int, default=31)
    parser.add_argument("--tol", type=float, default=1e-4)
    parser.add_argument("--max_iter", type=int, default=2000)
    parser.add_argument("--linear_tol", type=float, default=1e-3,
                        help="adjoint solve tolerance (configs/dlw.py's dlw.linear_tol)")
    parser.add_argument("--mode", default="implicit")
    parser.add_argument("--remat", action="store_true",
                        help="with --mode unrolled: configs/dlw.py's dlw.remat (checkpointed "
                             "iterates, the steps between them recomputed)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--microbatches", type=int, default=1,
                        help="config.microbatches: split the batch into this many parts, one "
                             "forward/backward at a time (gradient accumulation)")
    parser.add_argument("--breakdown", action="store_true",
                        help="also time the step's two parts alone: the weight net's forward "
                             "+ backward, and the lower-level solve + its hypergradient in W")
    args = parser.parse_args()

    config = dlw_configs.get_config("default")
    config.data.grayscale = False
    config.model.update(name="dlwnet3d", depth=4, features=64)
    config.noise.kinds = ("impulse",)
    config.dlw.update(sources=("tv",), tol=args.tol, max_iter=args.max_iter, mode=args.mode,
                      remat=args.remat, linear_tol=args.linear_tol, upper_loss="mse")  # the authors' objective
    model = build_model(config.model, in_channels=args.bands, rngs=nnx.Rngs(0))
    loss_fn = methods.get("dlw").make_loss(config)
    tx = optax.adam(1e-3)
    mesh = mesh_lib.data_mesh()
    replicated = mesh_lib.replicated(mesh)
    check_microbatches(args.microbatches, args.batch, mesh.size)
    graphdef, state = init_state(model, tx)
    state = jax.device_put(state, replicated)
    step = make_update_fn(graphdef, loss_fn, tx, 0, jax.tree.map(lambda x: x.sharding, state),
                          replicated, args.microbatches)
    batch = mesh_lib.global_batch({"image": smooth_patches(args.batch, args.size, args.bands)},
                                  mesh_lib.batch_sharded(mesh))
    temp_mb = step.lower(state, batch).compile().memory_analysis().temp_size_in_bytes / 2**20
    state, metrics = jax.block_until_ready(step(state, batch))
    times = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        state, metrics = jax.block_until_ready(step(state, batch))
        times.append(time.perf_counter() - start)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"DLW bilevel step: batch {args.batch}x{args.size}x{args.size}x{args.bands}, "
          f"DLWNet3D depth 4 x 64, weighted TV to residual {args.tol:g} ({args.mode}, "
          f"adjoint tol {args.linear_tol:g}), {args.microbatches} microbatch(es), "
          f"{jax.device_count()} {jax.default_backend()} device(s)")
    print(f"lower level: {float(metrics['iterations_tv']):.0f} iterations, residual "
          f"{float(metrics['residual_tv']):.1e}; loss {float(metrics['loss']):.5f}")
    print(f"step time median {statistics.median(times):.2f} s over {args.repeats}; XLA temp "
          f"buffers {temp_mb:.0f} MB; process peak RSS {peak_mb:.0f} MB")
    if args.breakdown:
        breakdown(graphdef, state, batch["image"], config, args.repeats)
    if (args.batch, args.size, args.bands) == (10, 64, 31):
        print(f"vs the authors' PyTorch step (66 s, 5.7 GB, issue 6): "
              f"{66 / statistics.median(times):.1f}x faster, {5.7 * 1024 / peak_mb:.1f}x less "
              f"peak memory")


if __name__ == "__main__":
    main()
