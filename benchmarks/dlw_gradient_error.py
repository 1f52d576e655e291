"""How exact is DLW's training hypergradient? Error and time against the lower-level settings.

    .venv/bin/python benchmarks/dlw_gradient_error.py [--config quick] [--workdir runs/dlw/quick]

One training batch of ``configs/dlw.py:CONFIG`` (mvtb:train patches, seed 7, the config's
training noise mix, key 3): the gradient of ``jaxden.methods.dlw.bilevel_loss`` in the weight
net's parameters, at the net's initialisation and, with ``--workdir``, at that run's trained
checkpoint. Each row: median time of the jitted gradient (3 calls after one warm-up), its
relative error and cosine against a reference solved to forward tol 1e-7 and adjoint tol 1e-6
(float32, as in training), for the config's settings (forward ``dlw.tol``, adjoint
``dlw.linear_tol`` with ``dlw.linear_max_iter`` = ``dlw.max_iter``), tighter forward
tolerances with an adjoint cap, and backpropagation through 300 unrolled iterations (with
``dlw.remat`` too: the same gradient from checkpointed iterates).
"""

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from flax import nnx  # noqa: E402

from configs import dlw as dlw_configs  # noqa: E402
from jaxden import methods, noise  # noqa: E402
from jaxden.methods import dlw  # noqa: E402
from jaxden.methods.denoise import patch_sampler  # noqa: E402
from jaxden.train.loop import restore_model  # noqa: E402

REFERENCE = dict(tol=1e-7, linear_tol=1e-6, max_iter=20000, linear_max_iter=20000)


def settings(config):
    d = config.dlw
    return [
        (f"config: tol {d.tol:g}, adjoint {d.linear_tol:g}, cap {d.max_iter}",
         dict(linear_max_iter=d.max_iter)),
        (f"tol {d.tol:g}, adjoint cap 200", dict(linear_max_iter=200)),
        ("tol 1e-5, adjoint cap 500", dict(tol=1e-5, linear_max_iter=500)),
        ("tol 1e-6, adjoint cap 500", dict(tol=1e-6, linear_max_iter=500, max_iter=3000)),
        ("unrolled, K = 300", dict(mode="unrolled", max_iter=300)),
        ("unrolled, K = 300, remat", dict(mode="unrolled", max_iter=300, remat=True)),
    ]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="quick", help="configs/dlw.py variant")
    parser.add_argument("--workdir", default=None, help="a trained run of that variant")
    args = parser.parse_args()
    config = dlw_configs.get_config(args.config)
    method = methods.get("dlw")
    clean = jnp.asarray(patch_sampler(config, config.data.train, 4, 7, False)
                        .batch(0, config.batch_size))
    noisy = noise.sample_noise(jax.random.key(3), clean, tuple(config.noise.kinds))
    models = {"initial": method.build_model(config)}
    if args.workdir:
        models["trained"] = restore_model(method, args.workdir, config)[0]

    def gradient(model, updates):
        c = dlw_configs.get_config(args.config)
        c.dlw.update(**updates)
        graphdef, params, rest = nnx.split(model, nnx.Param, ...)
        fn = jax.jit(jax.grad(
            lambda p: dlw.bilevel_loss(nnx.merge(graphdef, p, rest), clean, noisy, c)[0]))
        return lambda: jnp.concatenate([jnp.ravel(g) for g in jax.tree.leaves(fn(params))])

    print(f"configs/dlw.py:{args.config}, sources {tuple(config.dlw.sources)}, batch "
          f"{tuple(clean.shape)}; reference: {REFERENCE}")
    print("| net | setting | ms | relative error | cosine |\n|---|---|---:|---:|---:|")
    for name, model in models.items():
        ref = gradient(model, REFERENCE)()
        for label, updates in settings(config):
            fn = gradient(model, updates)
            g = jax.block_until_ready(fn())
            times = []
            for _ in range(3):
                start = time.perf_counter()
                jax.block_until_ready(fn())
                times.append(time.perf_counter() - start)
            error = float(jnp.linalg.norm(g - ref) / jnp.linalg.norm(ref))
            cosine = float(jnp.dot(g, ref) / (jnp.linalg.norm(g) * jnp.linalg.norm(ref)))
            print(f"| {name} | {label} | {1e3 * np.median(times):.1f} | {error:.2e} | "
                  f"{cosine:.4f} |", flush=True)


if __name__ == "__main__":
    main()
