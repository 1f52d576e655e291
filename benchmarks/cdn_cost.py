"""Cost of the classification-denoising network (issue 4, item 7), measured side by side.

    python benchmarks/cdn_cost.py [--config configs/cdn.py:quick] [--batch 32] [--rounds 20]

Prints two ratios of median wall times, each pair timed in alternation in one process:
- Tweedie denoise / forward: ``jaxden.tweedie.denoise`` (one forward and one backward pass
  of the energy network) against the forward pass f(y) alone. Target <= 2.0.
- DSM training step / CE-only training step: the jitted update of the joint loss (CE + DSM,
  a double backprop) against the same update with the DSM weight 0 (the classifier row).
  Target <= 2.5.
Also the DSM step with XLA's own strided convolutions (``model.conv_impl="xla"``) against the
configured one (``"auto"``: im2col matmuls on CPU; see ``jaxden.models.conv``).
"""

import argparse
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import optax  # noqa: E402
from flax import nnx  # noqa: E402

from jaxden import methods, tweedie  # noqa: E402
from jaxden.methods import cdn  # noqa: E402
from jaxden.train.state import init_state, merge_model  # noqa: E402


def _load_config(spec: str):
    import importlib.util

    path, _, arg = spec.partition(":")
    module_spec = importlib.util.spec_from_file_location("bench_config", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module.get_config(arg) if arg else module.get_config()


def _median_seconds(fns: dict, rounds: int) -> dict[str, float]:
    """Median wall time of each (compiled, warmed) fn, the fns called in alternation."""
    for fn in fns.values():
        jax.block_until_ready(fn())
    times = {name: [] for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            t = time.perf_counter()
            jax.block_until_ready(fn())
            times[name].append(time.perf_counter() - t)
    return {name: statistics.median(ts) for name, ts in times.items()}


def _update_fn(graphdef, loss_fn, tx):
    @jax.jit
    def update(state, batch, key):
        def objective(params):
            model = merge_model(graphdef, {"params": params, "rest": state["rest"]})
            return loss_fn(model, batch, key)

        (loss, _), grads = jax.value_and_grad(objective, has_aux=True)(state["params"])
        updates, opt_state = tx.update(grads, state["opt_state"], state["params"])
        return {**state, "params": optax.apply_updates(state["params"], updates),
                "opt_state": opt_state}, loss

    return update


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="configs/cdn.py:quick")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=20)
    args = parser.parse_args()

    config = _load_config(args.config)
    method = methods.get("cdn")
    model = method.build_model(config)
    key = jax.random.key(0)
    shape = (args.batch, 28, 28, 1 if config.data.grayscale else 3)
    clean = jax.random.uniform(key, shape)
    sigma = jnp.full((args.batch,), 25 / 255)
    noisy = clean + sigma[:, None, None, None] * jax.random.normal(key, shape)
    floor = config.noise.sigma_min / 255
    graphdef, state = nnx.split(model)

    def log_joint_of(state):
        return cdn.make_log_joint(nnx.merge(graphdef, state), sigma,
                                  scale=config.log_joint_scale, sigma_floor=floor)

    forward = jax.jit(lambda state, y: log_joint_of(state)(y))
    denoise = jax.jit(lambda state, y: tweedie.denoise(log_joint_of(state), y, sigma))
    inference = _median_seconds({"forward": lambda: forward(state, noisy),
                                 "denoise": lambda: denoise(state, noisy)}, args.rounds)

    tx = optax.adam(1e-3)
    batch = {"image": clean, "label": jnp.arange(args.batch) % config.model.num_classes}
    ce_config = config.copy_and_resolve_references()
    ce_config.loss.dsm_weight = 0.0
    xla_config = config.copy_and_resolve_references()
    xla_config.model.conv_impl = "xla"
    steps = {}
    for name, c in (("ce_step", ce_config), ("dsm_step", config),
                    ("dsm_step_xla_conv", xla_config)):
        graphdef_t, train_state = init_state(method.build_model(c), tx)
        update = _update_fn(graphdef_t, method.make_loss(c), tx)
        steps[name] = (update, train_state)
    training = _median_seconds({name: (lambda u=u, s=s: u(s, batch, key)[1])
                                for name, (u, s) in steps.items()}, args.rounds)

    print(f"config {args.config}, batch {args.batch}x{shape[1]}x{shape[2]}x{shape[3]}, "
          f"{jax.device_count()} {jax.default_backend()} device(s), median of {args.rounds} "
          f"alternating rounds")
    print(f"forward {1e3 * inference['forward']:.2f} ms, Tweedie denoise "
          f"{1e3 * inference['denoise']:.2f} ms: ratio "
          f"{inference['denoise'] / inference['forward']:.2f} (target <= 2.0)")
    print(f"CE-only step {1e3 * training['ce_step']:.2f} ms, CE + DSM step "
          f"{1e3 * training['dsm_step']:.2f} ms: ratio "
          f"{training['dsm_step'] / training['ce_step']:.2f} (target <= 2.5)")
    print(f"CE + DSM step with conv_impl={config.model.conv_impl!r} "
          f"{1e3 * training['dsm_step']:.2f} ms, with 'xla' "
          f"{1e3 * training['dsm_step_xla_conv']:.2f} ms: ratio "
          f"{training['dsm_step_xla_conv'] / training['dsm_step']:.2f}")


if __name__ == "__main__":
    main()
