"""A train.py run killed with SIGKILL and started again ends bitwise equal to a straight run."""

import os
import signal
import subprocess
import sys
import time

import jax
import numpy as np
from flax import nnx

from configs import addunet_denoise
from jaxden import methods
from jaxden.train.loop import restore_model

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OVERRIDES = ["--config.total_steps=600", "--config.checkpoint_every_steps=50",
             "--config.log_every_steps=50", "--config.eval_every_steps=600"]


def train_cmd(workdir):
    return [sys.executable, "train.py", "--config", "configs/addunet_denoise.py:tiny",
            "--workdir", workdir, *OVERRIDES]


ENV = {**os.environ, "JAX_PLATFORMS": "cpu", "JAX_NUM_CPU_DEVICES": "8"}


def committed_steps(workdir):
    path = os.path.join(workdir, "checkpoints")
    return sorted(int(d) for d in os.listdir(path) if d.isdigit()) if os.path.isdir(path) else []


def params(workdir):
    config = addunet_denoise.get_config("tiny")
    config.update(total_steps=600)
    model, _, step = restore_model(methods.get("denoise"), workdir, config)
    return step, nnx.to_pure_dict(nnx.state(model, nnx.Param))


def test_sigkill_then_restart_matches_straight_run(tmp_path):
    straight, killed = str(tmp_path / "straight"), str(tmp_path / "killed")
    subprocess.run(train_cmd(straight), cwd=ROOT, env=ENV, check=True, capture_output=True)

    proc = subprocess.Popen(train_cmd(killed), cwd=ROOT, env=ENV, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    while not committed_steps(killed) and proc.poll() is None:
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    at_kill = committed_steps(killed)
    assert at_kill and at_kill[-1] < 600, f"the run was not killed mid-way: {at_kill}"

    subprocess.run(train_cmd(killed), cwd=ROOT, env=ENV, check=True, capture_output=True)
    (step_a, a), (step_b, b) = params(straight), params(killed)
    assert step_a == step_b == 600
    jax.tree.map(lambda x, y: np.testing.assert_array_equal(np.asarray(x), np.asarray(y)), a, b)
