"""Hypergradient cost: implicit differentiation vs unrolling, weighted TV (DLW's lower level).

    .venv/bin/python benchmarks/hypergradient.py [--size 64] [--repeats 5] [--linear-solver S]

Problem: a size x size crop of skimage ``camera`` in [0, 1] at (200, 200), Gaussian noise
sigma = 25/255 (seed 0), DLW-style weights exp(0.5 * N(0, 1)) (seed 1), lam = 0.05, upper
loss 0.5 * ||x*(y, W, lam) - clean||^2; gradient wrt (y, W, lam); float64.
Reference: implicit at residual 1e-12. Rows: implicit at forward tolerance tol (half decades
from 1e-3 to 1e-8) with adjoint tolerance 100, 30 and 10 * tol (``--linear-solver``,
default the adjoint fixed-point iteration ``neumann``; an adjoint step-VJP costs more than a
forward step, and from tol 1e-5 up an adjoint tolerance of tol or 10 * tol gave larger
gradient errors than 100 * tol, being solved more exactly at a less exact fixed point;
30 * tol was the fastest row as accurate as unrolled K = 500: 17 ms, against 28 ms at
10 * tol), and unrolled with K = 20, 100, 500, 1000, 2000 iterations (Rui et al.,
arXiv 2301.06081, unroll K = 15-20 ADMM steps).
Time: median over repeats of the jitted value-and-gradient after one warm-up call. Memory:
XLA's temporary buffer size of the compiled value-and-gradient (``memory_analysis``).
"At equal accuracy" pairs each unrolled K with the fastest implicit row whose gradient error
is at most unrolled's, and prints unrolled/implicit time and memory.
"""

import argparse
import time

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from skimage import data  # noqa: E402

from jaxden import solvers  # noqa: E402


def problem(size):
    clean = np.asarray(data.camera(), np.float64)[200:200 + size, 200:200 + size, None] / 255
    y = clean + 25 / 255 * np.random.default_rng(0).standard_normal(clean.shape)
    weights = np.exp(0.5 * np.random.default_rng(1).standard_normal(clean.shape))
    return jnp.asarray(clean), jnp.asarray(y), jnp.asarray(weights), jnp.float64(0.05)


def hypergradient(clean, **options):
    def loss(y, weights, lam):
        x, info = solvers.tv(y, lam, weights, **options)
        return 0.5 * jnp.sum((x - clean) ** 2), info

    return jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2), has_aux=True))


def flat(grads):
    return jnp.concatenate([jnp.ravel(g) for g in grads])


def measure(fn, args, repeats):
    temp = fn.lower(*args).compile().memory_analysis().temp_size_in_bytes
    jax.block_until_ready(fn(*args))
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        (_, info), grads = jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - start)
    return float(np.median(times)), temp, info, grads


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--linear-solver", default="neumann",
                        help="adjoint solver of the implicit rows: neumann, gmres or bicgstab")
    args = parser.parse_args()
    clean, y, weights, lam = problem(args.size)
    inputs = (y, weights, lam)
    reference = hypergradient(clean, tol=1e-12, max_iter=200000, linear_tol=1e-12)
    (_, ref_info), ref_grads = reference(*inputs)
    ref = flat(ref_grads)
    print(f"weighted TV, {args.size}x{args.size} gray, float64, {jax.devices()[0].platform}, "
          f"adjoint solver {args.linear_solver}; "
          f"reference: {int(ref_info.iterations)} iterations, residual "
          f"{float(ref_info.residual):.1e}")
    rows = {f"implicit tol={tol:.0e},adj={ratio * tol:.0e}": dict(
                tol=tol, linear_tol=ratio * tol, max_iter=200000,
                linear_solver=args.linear_solver)
            for tol in (1e-3, 3e-4, 1e-4, 3e-5, 1e-5, 3e-6, 1e-6, 3e-7, 1e-7, 3e-8, 1e-8)
            for ratio in (100, 30, 10)}
    rows |= {f"unrolled K={k}": dict(max_iter=k, mode="unrolled")
             for k in (20, 100, 500, 1000, 2000)}
    results = {}
    print(f"{'method':<28}{'iters':>8}{'time ms':>10}{'temp MB':>10}{'rel grad err':>14}")
    for name, options in rows.items():
        seconds, temp, info, grads = measure(hypergradient(clean, **options), inputs,
                                             args.repeats)
        error = float(jnp.linalg.norm(flat(grads) - ref) / jnp.linalg.norm(ref))
        results[name] = (seconds, temp, error)
        print(f"{name:<28}{int(info.iterations):>8}{1e3 * seconds:>10.1f}"
              f"{temp / 2**20:>10.2f}{error:>14.2e}")
    implicit_rows = {k: v for k, v in results.items() if k.startswith("implicit")}
    print("at equal accuracy (fastest implicit row with error <= unrolled's):")
    for name, (seconds, temp, error) in results.items():
        if not name.startswith("unrolled"):
            continue
        matches = [(t, m, k) for k, (t, m, e) in implicit_rows.items() if e <= error]
        if not matches:
            print(f"  {name}: no implicit row is as accurate ({error:.1e})")
            continue
        t_imp, m_imp, match = min(matches)
        print(f"  {name} (err {error:.1e}) vs {match}: unrolled/implicit time "
              f"{seconds / t_imp:.1f}x, temp memory {temp / max(m_imp, 1):.0f}x")

if __name__ == "__main__":
    main()
