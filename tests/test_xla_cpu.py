"""jaxden.xla_cpu.configure: when it appends its flag to XLA_FLAGS, and when it leaves it."""

import os
import subprocess
import sys

import pytest

from jaxden import xla_cpu


@pytest.fixture
def cores(monkeypatch):
    def set_cores(n):
        monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(n)))
    return set_cores


def test_appends_on_several_cores(cores):
    cores(2)
    env = {"XLA_FLAGS": "--xla_dump_to=/tmp/x"}
    assert xla_cpu.configure(env)
    assert env["XLA_FLAGS"] == f"--xla_dump_to=/tmp/x {xla_cpu.FLAG}"


@pytest.mark.parametrize("env,n", [
    ({}, 1),  # one core: measured neutral, left alone
    ({"JAXDEN_XLA_CPU_DEFAULTS": "0"}, 2),  # opted out
    ({"XLA_FLAGS": "--xla_cpu_experimental_ynn_fusion_type=dot"}, 2),  # the user's choice
])
def test_leaves_xla_flags_alone(cores, env, n):
    cores(n)
    before = dict(env)
    assert not xla_cpu.configure(env)
    assert env == before


def test_unknown_jaxlib_is_left_alone(cores, monkeypatch):
    cores(2)
    monkeypatch.setattr(xla_cpu, "version", lambda name: "0.11.0")
    env = {}
    assert not xla_cpu.configure(env)
    assert env == {}


def test_jax_accepts_the_flag_and_convolves():
    """A fresh process with the flag set by jaxden: XLA accepts it and a convolution runs."""
    code = ("import jaxden, os, jax, jax.numpy as jnp; "
            "y = jax.lax.conv_general_dilated(jnp.ones((1, 4, 4, 2)), jnp.ones((3, 3, 2, 2)), "
            "(1, 1), 'SAME', dimension_numbers=('NHWC', 'HWIO', 'NHWC')); "
            "print(float(y.sum()), os.environ.get('XLA_FLAGS', ''))")
    env = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS",
                                                           "JAXDEN_XLA_CPU_DEFAULTS")}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         timeout=120, check=True).stdout.split()
    assert float(out[0]) == 400.0  # 100 valid taps x 2 input x 2 output channels
    assert (xla_cpu.FLAG in out[1:]) == (len(os.sched_getaffinity(0)) > 1)
