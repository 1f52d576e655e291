"""jaxden.cpu_memory: when it applies, and that it stops XLA:CPU's page faults.

The effect is checked in fresh interpreters (this one imported jaxden long ago): a jitted
function whose 4096 x 4096 float32 intermediate (64 MB, 16,384 pages) XLA allocates on every
call, counted in minor page faults per call, with jaxden's defaults and with them turned off.
"""

import os
import subprocess
import sys

import pytest

from jaxden import cpu_memory

FAULTS = """
import resource
import jaxden, jax, jax.numpy as jnp

f = jax.jit(lambda x: jnp.sum(jnp.tanh(x @ x.T) @ x))
x = jnp.ones((4096, 64), jnp.float32)
f(x).block_until_ready()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(5):
    f(x).block_until_ready()
faults = (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 5
print(jax.config.values["jax_cpu_enable_async_dispatch"], faults)
"""


def _async_and_faults(**env):
    env = {**{k: v for k, v in os.environ.items()
              if k not in ("JAXDEN_XLA_CPU_DEFAULTS", cpu_memory.ASYNC_ENV)},
           "JAX_PLATFORMS": "cpu", **env}
    out = subprocess.run([sys.executable, "-c", FAULTS], env=env, capture_output=True,
                         text=True, timeout=120, check=True).stdout.split()
    return out[0] == "True", float(out[1])


def test_temporary_buffers_are_reused_not_faulted_in_again():
    asynchronous, faults = _async_and_faults()
    assert not asynchronous and faults < 200
    asynchronous, faults = _async_and_faults(JAXDEN_XLA_CPU_DEFAULTS="0")
    assert asynchronous and faults > 8000  # glibc's own behaviour: the 64 MB mmapped afresh


@pytest.mark.parametrize("platforms,plugins,expected", [
    ("cpu", ["xla_cuda12"], True),
    ("cuda,cpu", [], False),
    ("tpu", [], False),
    ("", [], True),
    ("", ["xla_cuda12"], False),
])
def test_runs_on_cpu(platforms, plugins, expected):
    assert cpu_memory.runs_on_cpu(platforms, plugins) is expected


@pytest.mark.parametrize("env", [{"JAXDEN_XLA_CPU_DEFAULTS": "0"},
                                 {cpu_memory.ASYNC_ENV: "1"},  # the user's choice
                                 {"JAX_PLATFORMS": "cuda"}])
def test_left_alone(env, monkeypatch):
    monkeypatch.setattr(cpu_memory, "_glibc", lambda: pytest.fail("must not reach malloc"))
    assert not cpu_memory.configure(env)


def test_left_alone_without_glibc(monkeypatch):
    monkeypatch.setattr(cpu_memory, "_glibc", lambda: None)
    assert not cpu_memory.configure({"JAX_PLATFORMS": "cpu"})
