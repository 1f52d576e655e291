"""train.py and eval.py on 2 processes x 4 simulated CPU devices (127.0.0.1, gloo collectives)
against 1 process x 8 devices: same per-step losses and final parameters to 1e-5 relative,
metrics and checkpoints written once; resuming and evaluating on 2 processes (slow)."""

import json
import os
import shutil
import socket
import subprocess
import sys
import time

import jax
import numpy as np
import pytest
from flax import nnx

from configs import addunet_denoise
from jaxden import experiment, methods
from jaxden.train.loop import restore_model
from jaxden.train.metrics_log import MetricsLog

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OVERRIDES = {"log_every_steps": 1, "checkpoint_every_steps": 2, "eval_every_steps": 4}
TRAIN = ["train.py", "--config", "configs/addunet_denoise.py:tiny",
         *(f"--config.{k}={v}" for k, v in OVERRIDES.items())]
EVAL = ["--config.eval.bm3d=False", "--config.eval.sigmas=(25,)"]
# Compile time dominates: the same XLA settings as conftest.py gives this process.
ENV = {**os.environ, "JAX_PLATFORMS": "cpu", "JAX_NUM_CPU_DEVICES": "4",
       "JAX_DISABLE_MOST_OPTIMIZATIONS": "1"}
RTOL = 1e-5


def tiny_config():
    config = addunet_denoise.get_config("tiny")
    config.update(OVERRIDES)
    return config


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(args: list[str], workdir: str) -> list[subprocess.Popen]:
    """``args`` as 2 processes of a job coordinated on 127.0.0.1, 4 CPU devices each."""
    address = f"127.0.0.1:{free_port()}"
    return [subprocess.Popen(
        [sys.executable, *args, "--workdir", workdir, "--coordinator_address", address,
         "--num_processes", "2", "--process_id", str(i)],
        cwd=ROOT, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for i in range(2)]


def finish(procs: list[subprocess.Popen], timeout: float = 600) -> list[str]:
    """Every process's stdout; all killed and the stderr shown if one fails or hangs."""
    deadline, outs = time.monotonic() + timeout, []
    try:
        for p in procs:
            out, err = p.communicate(timeout=max(1.0, deadline - time.monotonic()))
            if p.returncode:
                raise AssertionError(f"process {len(outs)} exited {p.returncode}:\n{err[-3000:]}")
            outs.append(out)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    return outs


def run_two_processes(args: list[str], workdir: str) -> list[str]:
    return finish(launch(args, workdir))


def losses(workdir: str) -> list[float]:
    return [r["loss"] for r in MetricsLog(workdir).read()]


def params(workdir: str):
    model, _, step = restore_model(methods.get("denoise"), workdir, tiny_config())
    return step, nnx.to_pure_dict(nnx.state(model, nnx.Param))


def max_relative_difference(a, b) -> float:
    """Largest |a - b| / max|b| over leaves (elementwise ratios blow up at zero crossings)."""
    def relative(x, y):
        x, y = np.asarray(x), np.asarray(y)
        return float(np.max(np.abs(x - y)) / max(float(np.max(np.abs(y))), 1e-30))

    return max(jax.tree.leaves(jax.tree.map(relative, a, b)))


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """(2-process workdir, 1-process workdir): the same 4 tiny steps. The 1-process run trains
    in this process (8 devices, conftest.py) while the 2 processes start up."""
    two, one = (str(tmp_path_factory.mktemp(name)) for name in ("two", "one"))
    t = time.perf_counter()
    procs = launch(TRAIN, two)
    try:
        experiment.train_and_evaluate(tiny_config(), one)
    finally:
        finish(procs)
    print(f"\n2-process + 1-process training: {time.perf_counter() - t:.1f} s")
    return two, one


def test_two_processes_match_one_process(runs):
    two, one = runs
    steps = [r["step"] for r in MetricsLog(two).read()]
    assert steps == [1, 2, 3, 4], f"metrics.jsonl not written once per step: {steps}"
    assert sorted(os.listdir(os.path.join(two, "checkpoints"))) == ["2", "4"]
    with open(os.path.join(two, "config.json")) as f:
        assert json.load(f) == json.loads(tiny_config().to_json_best_effort())

    loss_diff = np.max(np.abs(np.subtract(losses(two), losses(one))) / np.abs(losses(one)))
    (step2, p2), (step1, p1) = params(two), params(one)
    param_diff = max_relative_difference(p2, p1)
    print(f"max relative difference: losses {loss_diff:.2e}, params {param_diff:.2e}")
    assert step2 == step1 == 4
    assert loss_diff <= RTOL
    jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, rtol=RTOL, atol=RTOL * np.max(
        np.abs(y))), p2, p1)


@pytest.mark.slow
def test_two_processes_resume_and_evaluate(runs, tmp_path):
    """Resume on 2 processes from the step-2 checkpoint of the 2-process run: the same losses
    and parameters as the straight run. eval.py on 2 processes: the table of 1 process, written
    and printed once."""
    two, one = runs
    resumed = str(tmp_path / "resumed")
    shutil.copytree(two, resumed)
    shutil.rmtree(os.path.join(resumed, "checkpoints", "4"))
    run_two_processes(TRAIN, resumed)
    assert [r["step"] for r in MetricsLog(resumed).read()] == [1, 2, 3, 4]
    np.testing.assert_allclose(losses(resumed), losses(two), rtol=1e-6)
    (_, a), (_, b) = params(resumed), params(two)
    jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, rtol=1e-6, atol=1e-9), a, b)

    # gloo prints "[Gloo] Rank i is connected to ..." on stdout as it connects; not ours
    outs = [[line for line in out.splitlines() if not line.startswith("[Gloo]")]
            for out in run_two_processes(["eval.py", *EVAL], two)]
    assert any("σ=25" in line for line in outs[0]) and not outs[1], "only process 0 prints"
    config = experiment.load_config(one)
    config.eval.update(bm3d=False, sigmas=(25,))
    experiment.evaluate(one, config)
    flat = []
    for workdir in (two, one):
        with open(os.path.join(workdir, "eval", "results.json")) as f:
            flat.append(jax.tree.leaves(json.load(f)["scores"]))
    np.testing.assert_allclose(flat[0], flat[1], rtol=RTOL)
