"""Test set-up: 8 simulated CPU devices, before any JAX computation.

Compile time dominates small tests on CPU, so most XLA optimisations are off; the tests that
compare 1 and 8 devices compare like with like, so this does not weaken them.
"""

import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402

jax.config.update("jax_num_cpu_devices", 8)
jax.config.update("jax_disable_most_optimizations", True)
