"""Robustness evaluation (issue 5): the denoiser-difference identity of adversarial gradients,
``jaxden.robustness.evaluate_robustness`` on tiny classification-denoising and multi-task runs,
and ``eval.py --robustness`` reporting a bad baseline in one line."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from configs import addunet_mtl as mtl_configs
from configs import cdn as cdn_configs
from configs import robustness as robustness_configs
from jaxden import experiment
from jaxden.methods.cdn import make_log_joint
from jaxden.models import GradResNetTiny
from jaxden.robustness import adversarial_gradient_identity, evaluate_robustness
from test_cli import run


@pytest.mark.parametrize("scale", ["eps", "none"])
def test_adversarial_gradient_is_a_difference_of_denoisers(scale):
    """grad_y log p(c|y) (jax.grad of the log-softmax) = (D(y, c) - D(y)) / sigma^2 (two
    Tweedie denoisers), float64, per sample, for several classes and noise levels."""
    with jax.enable_x64():
        model = GradResNetTiny(1, num_classes=4 + (scale == "eps"), sigma_conditioning=True,
                               rngs=nnx.Rngs(3))
        graphdef, params = nnx.split(model)
        params = jax.tree.map(lambda p: jnp.asarray(p, jnp.float64), params)
        model = nnx.merge(graphdef, params)
        y = jax.random.uniform(jax.random.key(0), (4, 9, 8, 1), jnp.float64)
        for sigma in (2 / 255, 0.4):
            log_joint = make_log_joint(model, jnp.full(4, sigma), scale=scale,
                                       sigma_floor=1 / 255)
            for c in (0, 2):
                labels = jnp.array([c, (c + 1) % 4, c, (c + 3) % 4])
                direct, difference = adversarial_gradient_identity(log_joint, y, labels, sigma)
                assert float(jnp.max(jnp.abs(direct))) > 1e-3  # not trivially zero
                # D(y, c) and D(y) share the large energy term, which cancels in the difference
                np.testing.assert_allclose(difference, direct, rtol=1e-6,
                                           atol=1e-8 * float(jnp.max(jnp.abs(direct))))


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A tiny joint CDN run and a tiny multi-task AddUNet run (8 devices)."""
    root = tmp_path_factory.mktemp("robust")
    cdn, mtl = str(root / "cdn"), str(root / "mtl")
    experiment.train_and_evaluate(cdn_configs.get_config("tiny"), cdn)
    experiment.train_and_evaluate(mtl_configs.get_config("tiny"), mtl)
    return cdn, mtl


def test_robustness_writes_table_plot_and_identity(runs):
    cdn, mtl = runs
    rc = robustness_configs.get_config("tiny")
    rc.update(baselines=mtl, linf=(2, 8), l2=(), fgsm_linf=0)  # one attack compile per row
    markdown = evaluate_robustness(cdn, rc)
    assert "| classifier | clean | L∞ 2/255 | L∞ 8/255 |\n" in markdown
    out = os.path.join(cdn, "eval", "robustness")
    with open(os.path.join(out, "results.json")) as f:
        results = json.load(f)
    rows = results["accuracy"]
    assert set(rows) == {"CDN joint: energy classifier",
                         "CDN joint: D(x) at σ=25 → classifier", "AddUNet MTL gated head"}
    for accs in rows.values():
        assert all(0 <= a <= 1 for a in accs.values())
        # the attack keeps the clean image when it finds nothing better: never above clean
        assert accs["L∞ 8/255"] <= accs["L∞ 2/255"] <= accs["clean"]
    assert max(results["identity"]["float64"]) < 1e-9
    assert max(results["identity"]["float32"]) < 1e-1
    for png in ("accuracy.png", "adversarial_gradients.png"):
        assert os.path.getsize(os.path.join(out, png)) > 0


def test_eval_py_robustness_bad_baseline_is_one_line(runs, tmp_path):
    cdn, _ = runs
    before = sorted(os.listdir(cdn))
    proc = run(["eval.py", "--workdir", cdn, "--robustness", "configs/robustness.py:tiny",
                f"--robustness.baselines={tmp_path}/no_run"], check=False)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert "no_run" in proc.stderr, proc.stderr[-2000:]
    assert sorted(os.listdir(cdn)) == before
