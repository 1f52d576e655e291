"""The bad-input table of the README: each bad input tried as a new user would, through
``train.py`` / ``eval.py`` in a subprocess.

Every case must end with exit status 1 and one line on stderr (after the progress bar, if it
trained a step) that starts with ``error:`` and names the fix, with no traceback, and must leave
an existing run as it was: each case gets its own copy of one small trained run (checkpoints,
metrics.jsonl, config.json) and every file of the copy is compared with the original
afterwards. The cases are independent subprocesses, so they run a few at a time; each test
checks one of them. Images of the other colour mode are converted, not refused: gray or RGB
files for a model of either kind are in test_cli.py and test_data.py.
"""

import dataclasses
import hashlib
import os
import re
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import skimage.data
from PIL import Image

from jaxden.data import DataError, load_images

PROGRESS = re.compile(r"^train \w+: .*\d+/\d+ \[")  # tqdm's line
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = ("--config", "configs/addunet_denoise.py:tiny")
# The tiny run's data: 4 small gray images (a later override of data.train wins).
GRAY = ("--config.data.train=folder:{data}/gray", "--config.data.val=folder:{data}/gray")


@dataclasses.dataclass(frozen=True)
class Case:
    """``args`` after ``python``, formatted with {run} (this case's copy of the trained run),
    {data} (the bad-input folders) and {tmp} (this case's own folder); ``fix``: substrings
    the one-line message must contain."""

    args: tuple[str, ...]
    fix: tuple[str, ...]
    env: tuple[tuple[str, str], ...] = ()


def train(*overrides, fix, config=TINY + GRAY, env=()):
    return Case(("train.py", *config, "--workdir", "{run}", *overrides), fix, env)


def evaluate(*overrides, fix, workdir="{run}"):
    return Case(("eval.py", "--workdir", workdir, *overrides), fix)


CASES = {
    # the command line and the config
    "mistyped_config_key": train(
        "--config.model.widht=8",
        fix=("--config.model.widht", "did you mean --config.model.width?")),
    "config_key_in_the_wrong_place": train(
        "--config.learning_rate=0.1", fix=("did you mean --config.optimizer.learning_rate?",)),
    "config_key_of_another_method": train(
        "--config.cls_weight=0.1",
        fix=("no such config key", "the keys at the top are batch_size")),
    "wrong_type": train(
        "--config.batch_size=eight",
        fix=("config.batch_size takes an int", "--config.batch_size=8")),
    "wrong_value": train("--config.model.skip=gatted", fix=("skip='gatted'", "'gated'")),
    "unknown_method": train(
        "--config.method=denoize", fix=("did you mean --config.method=denoise?",)),
    "unknown_variant": Case(
        ("train.py", "--config", "configs/addunet_denoise.py:huge", "--workdir", "{run}"),
        fix=("unknown variant 'huge'", "tiny")),
    "missing_config_file": Case(
        ("train.py", "--config", "configs/addunet_denoize.py", "--workdir", "{run}"),
        fix=("no such config file configs/addunet_denoize.py",
             "did you mean --config configs/addunet_denoise.py?")),
    "missing_config_flag": Case(
        ("train.py", "--workdir", "{run}"), fix=("--config is missing", "--config=configs/")),
    "missing_workdir_flag": Case(("train.py", *TINY), fix=("--workdir is missing",)),
    "mistyped_flag": Case(
        ("train.py", *TINY, "--work_dir", "{run}"), fix=("Did you mean: workdir",)),
    "workdir_is_a_file": train(fix=("is a file, not a folder", "--workdir")),
    "batch_not_divisible_by_devices": train(
        "--config.batch_size=6", fix=("not divisible by the 8 devices", "multiple of 8")),
    # the data
    "missing_image_folder": train(
        "--config.data.train=folder:{data}/phtos",
        fix=("phtos does not exist", "fix the path", "folder:")),
    "folder_without_images": train(
        "--config.data.train=folder:{data}/notes", fix=("no images in folder", ".png")),
    "corrupt_png": train(
        "--config.data.train=folder:{data}/corrupt",
        fix=("broken.png", "corrupt", "replace it, or delete it")),
    "image_smaller_than_patch": train(
        "--config.data.train=folder:{data}/small",
        fix=("tiny.png is 10x12", "lower patch_size to at most 10")),
    "nan_in_data": train(
        "--config.data.train=folder:{data}/nan",
        fix=("nan.tif has 2 NaN/Inf pixel(s)", "fix or delete the file")),
    "unknown_dataset_spec": train(
        "--config.data.train=bsd68", fix=("unknown dataset spec 'bsd68'", "folder:/path/to/dir")),
    "tfds_dataset_offline": train(
        "--config.data.train=tfds:cifar10", env=(("TFDS_DATA_DIR", "{tmp}"),),
        fix=("'cifar10'", "not available offline", "tfds build cifar10", "folder:")),
    "fashion_mnist_not_installed": train(
        "--config.data.dataset=fashion_mnist", "--config.data.data_dir={tmp}",
        config=("--config", "configs/addunet_mtl.py:tiny"),
        fix=("Fashion-MNIST files", "apt-get install dataset-fashion-mnist", "'digits'")),
    # an existing run
    "resume_with_another_model": train(
        "--config.model.width=8", "--config.total_steps=4",
        fix=("does not fit the model", "config.json")),
    "resume_diverges": train(
        "--config.optimizer.learning_rate=1e30", "--config.total_steps=4",
        fix=("NaN/Inf at step", "(latest: step 2) are intact",
             "Lower --config.optimizer.learning_rate")),
    "eval_without_checkpoint": evaluate(
        workdir="{tmp}/never_trained", fix=("no checkpoint in", "train first")),
    "eval_missing_workdir_flag": Case(("eval.py",), fix=("--workdir is missing",)),
    "eval_mistyped_config_key": evaluate(
        "--config.eval.sigma=25", fix=("did you mean --config.eval.sigmas",)),
    "eval_with_another_model": evaluate(
        "--config.model.width=8", fix=("trained with model.width=4", "drop --config.model.width")),
    "eval_rgb_on_gray_model": evaluate(
        "--config.data.grayscale=False",
        fix=("trained with data.grayscale=True", "drop --config.data.grayscale")),
    "eval_corrupt_png": evaluate(
        "--config.eval.dataset=folder:{data}/corrupt", fix=("broken.png", "corrupt")),
    "robustness_of_a_denoiser": evaluate(
        "--robustness", "configs/robustness.py:tiny",
        fix=("has no classifier", "needs a 'cdn' or 'multitask' run")),
}


def tree_hashes(folder: str) -> dict[str, str]:
    out = {}
    for parent, _, files in os.walk(folder):
        for name in files:
            path = os.path.join(parent, name)
            with open(path, "rb") as f:
                out[os.path.relpath(path, folder)] = hashlib.sha256(f.read()).hexdigest()
    return out


def run(args, env=(), devices=8):
    # Most XLA optimisations off, as in conftest.py: they cost compile time, change no message.
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "JAX_NUM_CPU_DEVICES": str(devices),
           "JAX_DISABLE_MOST_OPTIMIZATIONS": "true", **dict(env)}
    return subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=600)


def make_bad_data(data):
    camera = skimage.data.camera()
    for name in ("gray", "notes", "corrupt", "small", "nan"):
        (data / name).mkdir()
    for i in range(4):
        Image.fromarray(camera[40 * i:40 * i + 40, 100:140]).save(data / "gray" / f"{i}.png")
    (data / "notes" / "readme.txt").write_text("not an image")
    (data / "notes" / "labels.csv").write_text("0,1\n")
    png = (data / "gray" / "0.png").read_bytes()
    (data / "corrupt" / "broken.png").write_bytes(png[: len(png) // 2])  # truncated download
    shutil.copy(data / "gray" / "1.png", data / "corrupt" / "good.png")
    Image.fromarray(camera[:10, :12]).save(data / "small" / "tiny.png")
    pixels = (camera[:40, :40] / 255).astype(np.float32)
    pixels[3, 4], pixels[5, 6] = np.nan, np.inf
    Image.fromarray(pixels, mode="F").save(data / "nan" / "nan.tif")


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory):
    """{case: (CompletedProcess, run hashes before, after)}, after training one tiny run."""
    root = tmp_path_factory.mktemp("bad_inputs")
    data = root / "data"
    data.mkdir()
    make_bad_data(data)
    trained = str(root / "trained")
    proc = run(["train.py", *TINY, *(a.format(data=data) for a in GRAY), "--workdir", trained,
                "--config.total_steps=2"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    before = tree_hashes(trained)

    def one(name):
        case, tmp = CASES[name], root / name
        tmp.mkdir()
        copy = str(tmp / "run")
        shutil.copytree(trained, copy)
        if name == "workdir_is_a_file":
            copy = str(tmp / "run.txt")
            with open(copy, "w") as f:
                f.write("notes\n")
        fill = dict(run=copy, data=data, tmp=tmp)
        proc = run([a.format(**fill) for a in case.args],
                   env=[(k, v.format(**fill)) for k, v in case.env])
        return proc, tree_hashes(str(tmp / "run"))

    with ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1)) as pool:
        results = dict(zip(CASES, pool.map(one, CASES)))
    return {name: (proc, before, after) for name, (proc, after) in results.items()}


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input(name, outcomes):
    proc, before, after = outcomes[name]
    # stderr holds the error line, after the progress bar of any step trained before it
    lines = [line for line in proc.stderr.splitlines() if line.strip()
             and not PROGRESS.search(line)]
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr[-3000:]
    for fix in CASES[name].fix:
        assert fix in lines[0], lines[0]
    assert after == before, "the existing run was changed"


def test_float_image_outside_unit_range(tmp_path):
    """A float TIFF in [0, 255] instead of [0, 1]: the same path as nan_in_data, in-process."""
    Image.fromarray(np.full((8, 8), 200.0, np.float32), mode="F").save(tmp_path / "f.tif")
    with pytest.raises(DataError, match=r"f\.tif has values in \[200, 200\], not \[0, 1\]: "
                                        r"rescale"):
        load_images(f"folder:{tmp_path}", grayscale=True)
