"""train.py and eval.py as a user runs them: tiny config, 1 vs 8 devices, a user's PNG folder.
The one-line errors of bad inputs are in test_bad_inputs.py."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run(args, devices=8, check=True):
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "JAX_NUM_CPU_DEVICES": str(devices)}
    proc = subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=600)
    if check and proc.returncode:
        raise AssertionError(f"{args} failed:\n{proc.stderr[-3000:]}")
    return proc


def losses(workdir):
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        return [json.loads(line)["loss"] for line in f]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    workdir = str(tmp_path_factory.mktemp("cli8"))
    run(["train.py", "--config", "configs/addunet_denoise.py:tiny", "--workdir", workdir])
    return workdir


def test_train_on_one_and_eight_devices_writes_the_same_losses(trained, tmp_path):
    run(["train.py", "--config", "configs/addunet_denoise.py:tiny", "--workdir", str(tmp_path)],
        devices=1)
    assert len(losses(trained)) == 2
    np.testing.assert_allclose(losses(str(tmp_path)), losses(trained), rtol=1e-5)


def test_eval_on_a_folder_of_user_pngs(trained, tmp_path):
    import skimage.data

    folder = tmp_path / "photos"
    folder.mkdir()
    Image.fromarray(skimage.data.coins()).save(folder / "coins.png")
    Image.fromarray(skimage.data.immunohistochemistry()).save(folder / "ihc.png")
    proc = run(["eval.py", "--workdir", trained, f"--config.eval.dataset=folder:{folder}",
                "--config.eval.bm3d=False", "--config.eval.sigmas=(15,50)",
                # a placeholder saved as null in config.json stays overridable (the same model:
                # 3x3 kernels are the default)
                "--config.model.kernel_sizes=(3,3)"])
    assert "σ=50" in proc.stdout and "σ=25" not in proc.stdout and "coins.png" in proc.stdout
    with open(os.path.join(trained, "eval", "results.json")) as f:
        results = json.load(f)
    assert results["sigmas"] == [15, 50]
    assert set(results["scores"]["psnr"]["TV"]["15"]) == {"coins.png", "ihc.png"}
