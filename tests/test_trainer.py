"""The generic trainer: data parallelism, exact resume, NaN stop, logging, evaluation smoke."""

import json
import os
import shutil

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from flax import nnx

from configs import addunet_denoise
from jaxden import experiment, methods
from jaxden.train import mesh as mesh_lib
from jaxden.train.checkpoint import Checkpoints
from jaxden.train.loop import TrainingDiverged, restore_model, train
from jaxden.train.metrics_log import MetricsLog


def tiny_config(**overrides) -> ml_collections.ConfigDict:
    config = addunet_denoise.get_config("tiny")
    config.update(overrides)
    return config


def final_params(workdir, config):
    model, _, step = restore_model(methods.get(config.method), workdir, config)
    return step, nnx.to_pure_dict(nnx.state(model, nnx.Param))


@pytest.fixture(scope="module")
def straight_run(tmp_path_factory):
    """4 steps of the tiny AddUNet denoiser on all 8 devices, uninterrupted."""
    workdir = str(tmp_path_factory.mktemp("straight"))
    config = tiny_config()
    train(methods.get(config.method), config, workdir)
    return workdir, config


def test_writes_metrics_config_and_checkpoints(straight_run):
    workdir, config = straight_run
    records = MetricsLog(workdir).read()
    assert [r["step"] for r in records] == [2, 4]
    for r in records:
        for key in ("loss", "lr", "steps_per_sec", "examples_per_sec", "train_psnr", "grad_norm",
                    "val_psnr_s25"):
            assert key in r and np.isfinite(r[key]), key
    assert Checkpoints(workdir, read_only=True).latest_step() == config.total_steps
    assert experiment.load_config(workdir).to_dict() == config.to_dict()  # tuples stay tuples


def test_one_device_equals_eight_devices(straight_run, tmp_path):
    """The same 4 steps on a 1-device mesh: same losses and parameters to 1e-5 relative."""
    workdir8, config = straight_run
    one = jax.make_mesh((1,), (mesh_lib.DATA_AXIS,), devices=jax.devices()[:1])
    train(methods.get(config.method), config, str(tmp_path), mesh=one)
    log = lambda w: [r["loss"] for r in MetricsLog(w).read()]  # noqa: E731
    np.testing.assert_allclose(log(str(tmp_path)), log(workdir8), rtol=1e-5)
    _, p1 = final_params(str(tmp_path), config)
    _, p8 = final_params(workdir8, config)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7), p1, p8)


def test_resume_is_bitwise_exact(straight_run, tmp_path):
    """Train to step 4, drop the step-4 checkpoint, resume from step 2: identical parameters."""
    workdir, config = straight_run
    resumed = str(tmp_path / "resumed")
    shutil.copytree(workdir, resumed)
    shutil.rmtree(os.path.join(resumed, "checkpoints", "4"))
    train(methods.get(config.method), config, resumed)
    step_a, a = final_params(workdir, config)
    step_b, b = final_params(resumed, config)
    assert step_a == step_b == config.total_steps
    jax.tree.map(lambda x, y: np.testing.assert_array_equal(np.asarray(x), np.asarray(y)), a, b)
    steps = [r["step"] for r in MetricsLog(resumed).read()]
    assert steps == [2, 4], "lines after the restored checkpoint must be replaced, not repeated"


def test_rgb_training_and_validation(tmp_path):
    config = tiny_config(total_steps=2)
    config.data.grayscale = False
    model = train(methods.get(config.method), config, str(tmp_path))
    assert model.stem.in_features == 3
    [record] = MetricsLog(str(tmp_path)).read()
    assert np.isfinite(record["loss"]) and np.isfinite(record["val_psnr_s50"])


class _Linear(nnx.Module):
    def __init__(self, rngs):
        self.w = nnx.Param(jnp.ones((3,)))


class _PoisonedStream:
    """Rows of ones, with NaN in the batch of step ``bad_step`` (0-based)."""

    def __init__(self, bad_step):
        self.bad_step = bad_step

    def batch(self, step):
        x = np.ones((8, 3), np.float32)
        if step == self.bad_step:
            x[0, 0] = np.nan
        return {"x": x}


class _ToyMethod:
    """A method that is not a denoiser: the trainer must not care."""

    name = "toy"

    def __init__(self, bad_step):
        self.bad_step = bad_step

    def build_model(self, config):
        return _Linear(nnx.Rngs(config.seed))

    def train_data(self, config, process_index, process_count):
        return _PoisonedStream(self.bad_step)

    def make_loss(self, config):
        return lambda model, batch, key: (jnp.mean((batch["x"] @ model.w[...] - 1.0) ** 2), {})

    def make_validate(self, config):
        return None


def toy_config(total_steps):
    return ml_collections.ConfigDict(dict(
        seed=0, batch_size=8, total_steps=total_steps, log_every_steps=4,
        checkpoint_every_steps=2, eval_every_steps=100,
        optimizer=dict(name="sgd", learning_rate=0.05, schedule="constant", momentum=0.0)))


def test_nan_stops_at_the_exact_step_and_keeps_checkpoints(tmp_path):
    with pytest.raises(TrainingDiverged, match=r"step 3\b") as info:
        train(_ToyMethod(bad_step=2), toy_config(8), str(tmp_path))
    assert "learning_rate" in str(info.value)
    assert Checkpoints(str(tmp_path), read_only=True).latest_step() == 2


def test_generic_trainer_learns_a_toy_problem(tmp_path):
    train(_ToyMethod(bad_step=-1), toy_config(40), str(tmp_path))
    losses = [r["loss"] for r in MetricsLog(str(tmp_path)).read()]
    assert losses[-1] < 0.01 * losses[0]


def test_evaluate_writes_tables_and_grid(straight_run):
    workdir, _ = straight_run
    markdown = experiment.evaluate(workdir)
    for name in ("results.md", "results.json", "grid.png"):
        assert os.path.getsize(os.path.join(workdir, "eval", name)) > 0
    with open(os.path.join(workdir, "eval", "results.json")) as f:
        results = json.load(f)
    assert set(results["scores"]["psnr"]) == {"noisy", "TV", "BM3D", "addunet_tiny (gated)"}
    assert len(results["scores"]["psnr"]["TV"]["25"]) == 10
    assert "σ=50" in markdown and "Command" in markdown
    # TV must improve on the noisy input at every sigma (a sanity check of the evaluation).
    for s in ("15", "25", "50"):
        tv = np.mean(list(results["scores"]["psnr"]["TV"][s].values()))
        noisy = np.mean(list(results["scores"]["psnr"]["noisy"][s].values()))
        assert tv > noisy
