"""The README's demo claim, end to end (about 10 minutes on 2 cores): run with -m slow."""

import json
import os

import numpy as np
import pytest

import jaxden
from configs import addunet_denoise
from jaxden.experiment import evaluate


@pytest.mark.slow
def test_quick_config_beats_noisy_input_and_tv_at_every_sigma(tmp_path):
    workdir = str(tmp_path)
    jaxden.train_and_evaluate(addunet_denoise.get_config("quick"), workdir)
    evaluate(workdir)
    with open(os.path.join(workdir, "eval", "results.json")) as f:
        psnr = json.load(f)["scores"]["psnr"]
    for sigma in ("15", "25", "50"):
        mean = {m: np.mean(list(psnr[m][sigma].values())) for m in psnr}
        model = mean["addunet (gated)"]
        assert model > mean["TV"] + 0.3 and model > mean["noisy"] + 5, (sigma, mean)
