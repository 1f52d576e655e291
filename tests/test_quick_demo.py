"""The README's demo claim, end to end (about 10 minutes on 2 cores): run with -m slow."""

import json
import os

import jax
import numpy as np
import pytest

from configs import addunet_denoise
from jaxden import methods
from jaxden.experiment import evaluate
from jaxden.train import mesh as mesh_lib
from jaxden.train.loop import train


@pytest.fixture
def optimised_compilation():
    """The demo runs with XLA's optimisations, which conftest turns off for speed of compile."""
    jax.config.update("jax_disable_most_optimizations", False)
    yield
    jax.config.update("jax_disable_most_optimizations", True)


@pytest.mark.slow
def test_quick_config_beats_noisy_input_and_tv_at_every_sigma(tmp_path, optimised_compilation):
    workdir = str(tmp_path)
    config = addunet_denoise.get_config("quick")
    one_device = jax.make_mesh((1,), (mesh_lib.DATA_AXIS,), devices=jax.devices()[:1])
    train(methods.get(config.method), config, workdir, mesh=one_device)  # as `make demo` does
    evaluate(workdir)
    with open(os.path.join(workdir, "eval", "results.json")) as f:
        psnr = json.load(f)["scores"]["psnr"]
    for sigma in ("15", "25", "50"):
        mean = {m: np.mean(list(psnr[m][sigma].values())) for m in psnr}
        model = mean["addunet (gated)"]
        assert model > mean["TV"] + 0.3 and model > mean["noisy"] + 5, (sigma, mean)
