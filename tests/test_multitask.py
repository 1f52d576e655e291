"""Multi-task AddUNet (issue 3): head, joint loss, labels, data stream, training on 8 devices,
evaluation and the cross-run comparison."""

import json
import os
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import tensorflow_datasets as tfds
from flax import nnx

from configs import addunet_mtl
from jaxden import compare, data, experiment, methods
from jaxden.methods.labelled import load_split
from jaxden.methods.multitask import joint_loss
from jaxden.methods.multitask_eval import row_label
from jaxden.models import MultiTaskAddUNet
from jaxden.train import mesh as mesh_lib
from jaxden.train.loop import restore_model, train
from jaxden.train.metrics_log import MetricsLog

K = 10


def tiny_model(seed=0, **kwargs):
    kwargs = {"num_classes": K, "width": 4, "levels": 2, "convs_per_block": 1,
              "head_hidden": (8,), **kwargs}
    return MultiTaskAddUNet(1, rngs=nnx.Rngs(seed), **kwargs)


def param_count(module):
    return sum(x.size for x in jax.tree.leaves(nnx.state(module, nnx.Param)))


Y = jax.random.uniform(jax.random.key(0), (3, 12, 12, 1))


# ---------------------------------------------------------------------------------- model

@pytest.mark.parametrize("fixed_resolution", [False, True])
@pytest.mark.parametrize("skip", ["gated", "add", "concat", "none"])
def test_every_skip_mode_returns_image_and_logits(skip, fixed_resolution):
    denoised, logits = tiny_model(skip=skip, fixed_resolution=fixed_resolution)(Y)
    assert denoised.shape == Y.shape and logits.shape == (3, K)
    assert np.all(np.isfinite(denoised)) and np.all(np.isfinite(logits))


def test_head_reads_pooled_deepest_features():
    """Oracle: logits = W2 relu(W1 mean_hw(encode(y)) + b1) + b2, written out by hand."""
    model = tiny_model()
    features, _ = model.unet.encode(Y)
    pooled = np.asarray(features).mean(axis=(1, 2))
    h, o = model.classifier.hidden[0], model.classifier.out
    expected = np.maximum(pooled @ np.asarray(h.kernel[...]) + np.asarray(h.bias[...]), 0)
    expected = expected @ np.asarray(o.kernel[...]) + np.asarray(o.bias[...])
    np.testing.assert_allclose(model(Y)[1], expected, rtol=1e-5, atol=1e-6)


def test_tasks_build_only_what_they_use():
    both, linear = tiny_model(), tiny_model(head_hidden=())
    denoiser, classifier = tiny_model(tasks=("denoise",)), tiny_model(tasks=("classify",))
    assert denoiser(Y)[1] is None and classifier(Y)[0] is None
    head_mlp, head_linear = 4 * 8 + 8 + 8 * K + K, 4 * K + K
    assert param_count(both) - param_count(denoiser) == head_mlp
    assert param_count(linear) - param_count(denoiser) == head_linear
    assert not hasattr(classifier.unet, "decoder") and not hasattr(classifier.unet, "beta")
    assert param_count(classifier) < param_count(both)
    # the head is built after the AddUNet, so from one seed both rows start from one denoiser
    np.testing.assert_array_equal(denoiser(Y)[0], both(Y)[0])
    with pytest.raises(ValueError, match="decoder=False"):
        classifier.gates()


@pytest.mark.parametrize("kwargs, match", [
    ({"tasks": ()}, "tasks"), ({"tasks": ("denoise", "segment")}, "tasks"),
    ({"head_tap": "middle"}, "head_tap"), ({"num_classes": 1}, "num_classes"),
])
def test_bad_model_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        tiny_model(**kwargs)


def _cls_grads(model):
    labels = jnp.arange(3) % K

    def l_cls(m):
        return joint_loss(None, m(Y)[1], None, labels, kind="mse", cls_weight=1.0)[0]

    return nnx.grad(l_cls)(model)


def test_classification_loss_never_reaches_the_gates_when_the_head_taps_the_deepest_features():
    """The gates sit on the decoder path only, so L_cls cannot move them (what the gate
    study's multi-task gates must be read against); a decoder-tapped head does move them."""
    deepest = _cls_grads(tiny_model())
    assert float(jnp.abs(deepest.unet.beta[...]).max()) == 0.0
    assert all(float(jnp.abs(x).max()) == 0.0 for x in jax.tree.leaves(deepest.unet.decoder))
    assert float(jnp.abs(deepest.unet.stem.kernel[...]).max()) > 0.0
    decoder_tap = _cls_grads(tiny_model(head_tap="decoder"))
    assert float(jnp.abs(decoder_tap.unet.beta[...]).min()) > 0.0


# ----------------------------------------------------------------------------------- loss

def test_joint_loss_is_mse_plus_lambda_cross_entropy():
    key1, key2, key3 = jax.random.split(jax.random.key(1), 3)
    clean = jax.random.uniform(key1, (4, 5, 5, 1))
    denoised = clean + 0.1 * jax.random.normal(key2, clean.shape)
    logits = jax.random.normal(key3, (4, K))
    labels = jnp.array([0, 3, 9, 3])
    z = np.asarray(logits, np.float64)
    log_p = z - z.max(1, keepdims=True)
    log_p -= np.log(np.exp(log_p).sum(1, keepdims=True))
    ce = -np.mean(log_p[np.arange(4), np.asarray(labels)])
    mse = np.mean((np.asarray(denoised, np.float64) - np.asarray(clean)) ** 2)
    mae = np.mean(np.abs(np.asarray(denoised, np.float64) - np.asarray(clean)))
    loss, m = joint_loss(denoised, logits, clean, labels, kind="mse", cls_weight=0.3)
    np.testing.assert_allclose(loss, mse + 0.3 * ce, rtol=1e-5)
    np.testing.assert_allclose(m["loss_cls"], ce, rtol=1e-5)
    assert float(m["train_acc"]) == np.mean(z.argmax(1) == np.asarray(labels))
    np.testing.assert_allclose(joint_loss(denoised, logits, clean, labels, kind="l1",
                                          cls_weight=0.3)[0], mae + 0.3 * ce, rtol=1e-5)
    # a single task is its own loss, whatever lambda is
    np.testing.assert_allclose(joint_loss(denoised, None, clean, labels, kind="mse",
                                          cls_weight=0.3)[0], mse, rtol=1e-5)
    np.testing.assert_allclose(joint_loss(None, logits, clean, labels, kind="mse",
                                          cls_weight=0.3)[0], ce, rtol=1e-5)


# --------------------------------------------------------------------------- labels, data

def test_example_stream_is_pure_sharded_and_keeps_labels_with_their_images():
    n = 50
    values = np.arange(1, n + 1, dtype=np.float32) / (n + 1)  # example i is (i + 1) / (n + 1)
    images = np.broadcast_to(values[:, None, None, None], (n, 4, 4, 1)).copy()
    images[:, :, 0] = 0.0  # an asymmetric column, to see flips
    examples = data.LabelledImages(images, np.arange(n, dtype=np.int32) % 7, 7,
                                   tuple("abcdefg"), "toy/train")
    sampler = data.ExampleSampler(examples, seed=3, flip=True)
    whole = sampler.batch(11, 8)
    again = data.ExampleSampler(examples, seed=3, flip=True).batch(11, 8)
    parts = [sampler.batch(11, 8, process_index=p, process_count=4) for p in range(4)]
    for key in ("image", "label"):
        np.testing.assert_array_equal(whole[key], again[key])
        np.testing.assert_array_equal(whole[key], np.concatenate([p[key] for p in parts]))
    index = np.rint(whole["image"].max(axis=(1, 2, 3)) * (n + 1)).astype(int) - 1
    np.testing.assert_array_equal(whole["label"], index % 7)
    flipped = whole["image"][:, :, -1, 0].max(1) == 0
    assert 0 < flipped.sum() < 8, "some rows flipped, some not"
    epoch = np.concatenate([sampler.batch(s, 10)["label"] for s in range(5)])
    assert sorted(epoch.tolist()) == sorted((np.arange(n) % 7).tolist())  # one epoch


def test_split_checks_classes_and_holds_out_the_end_of_train():
    config = addunet_mtl.get_config("tiny")
    train_part, val = load_split(config, "train"), load_split(config, "val")
    full = data.load_labelled("digits", split="train")
    assert len(train_part) + len(val) == len(full) and len(val) == config.data.val_examples
    np.testing.assert_array_equal(val.labels, full.labels[-config.data.val_examples:])
    config.model.num_classes = 12
    with pytest.raises(data.DataError, match="num_classes=10"):
        load_split(config, "train")
    config.model.num_classes, config.data.val_examples = 10, 5000
    with pytest.raises(data.DataError, match="val_examples=5000"):
        load_split(config, "val")


def test_rows_and_variants_of_the_config():
    labels = {row: row_label(addunet_mtl.get_config(f"quick,{row}")) for row in addunet_mtl.ROWS}
    assert labels == {"mtl": "MTL gated", "concat": "MTL concat",
                      "single_task": "single-task gated", "classifier": "classifier-only",
                      "linear_probe": "MTL gated, linear probe",
                      "decoder_tap": "MTL gated, decoder tap"}
    for variant in ("default", "quick", "tiny"):
        config = addunet_mtl.get_config(variant)
        model = nnx.eval_shape(lambda c=config: methods.get(c.method).build_model(c))
        assert param_count(model) > 0 and config.batch_size % 8 == 0
    with pytest.raises(ValueError, match="mtl, concat"):
        addunet_mtl.get_config("quick,deep")


# ------------------------------------------------------------------ training, evaluation

@pytest.fixture(scope="module")
def tiny_runs(tmp_path_factory):
    """The tiny multi-task config (digits): 4 steps on 8 devices, twice (seeds 0 and 1), and
    evaluated; the second seed gives the comparison a seed spread."""
    runs = []
    for seed in (0, 1):
        workdir = str(tmp_path_factory.mktemp(f"mtl{seed}"))
        config = addunet_mtl.get_config("tiny")
        config.seed = seed
        experiment.train_and_evaluate(config, workdir)
        experiment.evaluate(workdir)
        runs.append((workdir, config))
    return runs


def test_multitask_training_on_eight_devices_matches_one_and_resumes_exactly(tiny_runs, tmp_path):
    workdir8, config = tiny_runs[0]
    records = MetricsLog(workdir8).read()
    for key in ("loss", "loss_den", "loss_cls", "train_acc", "train_psnr", "loss_max",
                "grad_norm_max", "val_psnr_s25", "val_acc_s25"):
        assert np.isfinite(records[-1][key]), key
    one = jax.make_mesh((1,), (mesh_lib.DATA_AXIS,), devices=jax.devices()[:1])
    train(methods.get(config.method), config, str(tmp_path / "one"), mesh=one)
    losses = lambda w: [r["loss"] for r in MetricsLog(w).read()]  # noqa: E731
    np.testing.assert_allclose(losses(str(tmp_path / "one")), losses(workdir8), rtol=1e-5)
    resumed = str(tmp_path / "resumed")
    shutil.copytree(workdir8, resumed)
    shutil.rmtree(os.path.join(resumed, "checkpoints", "4"))
    train(methods.get(config.method), config, resumed)
    params = [nnx.to_pure_dict(nnx.state(restore_model(methods.get(config.method), w)[0],
                                         nnx.Param)) for w in (workdir8, resumed)]
    jax.tree.map(lambda a, b: np.testing.assert_array_equal(np.asarray(a), np.asarray(b)),
                 *params)


def test_evaluation_writes_scores_gates_and_modulation(tiny_runs):
    workdir, config = tiny_runs[0]
    with open(os.path.join(workdir, "eval", "results.json")) as f:
        results = json.load(f)
    assert results["label"] == "MTL gated" and results["num_examples"] == 40
    assert list(results["scores"]) == ["0", "15", "25", "50"]
    for s in results["scores"].values():
        assert 0.0 <= s["acc"] <= 1.0 and np.isfinite(s["psnr"]) and s["ssim"] is None  # 8x8
    assert results["noisy_input"]["0"]["psnr"] is None
    model, _, _ = restore_model(methods.get(config.method), workdir)
    np.testing.assert_allclose(results["gates"], np.asarray(model.gates()), rtol=1e-6)
    assert len(results["modulation"]) == 1 + 2 * 3
    # scaling a gate by 1 is the unmodulated model; the head reads the deepest features, so
    # accuracy does not depend on the gates
    accs = {round(v["acc"], 6) for v in results["modulation"].values()}
    assert len(accs) == 1
    for name in ("gates.png", "grid.png", "results.md"):
        assert os.path.getsize(os.path.join(workdir, "eval", name)) > 0


def test_compare_groups_seeds_and_writes_the_study(tiny_runs, tmp_path):
    out = str(tmp_path / "cmp")
    markdown = compare.compare([w for w, _ in tiny_runs], out)
    assert "| MTL gated | 2 |" in markdown and "Training stability" in markdown
    assert "level 0 x0.5" in markdown
    for name in ("comparison.md", "gates.png", "stability.png"):
        assert os.path.getsize(os.path.join(out, name)) > 0
    assert compare.main(["--out", out, str(tmp_path / "nowhere")]) == 1


def test_runs_group_by_label_then_by_lambda():
    def run(label, tasks, lam, seed):
        return {"results": {"label": label, "tasks": tasks, "seed": seed,
                            "config": {"cls_weight": lam}}}

    both = ["denoise", "classify"]
    runs = [run("MTL gated", both, 0.01, 0), run("MTL gated", both, 0.01, 1),
            run("MTL gated", both, 0.1, 0), run("MTL concat", both, 0.01, 0),
            run("single-task gated", ["denoise"], 0.5, 0)]
    groups = compare.group_runs(runs)
    assert {k: len(v) for k, v in groups.items()} == {
        "MTL gated λ=0.01": 2, "MTL gated λ=0.1": 1, "MTL concat": 1, "single-task gated": 1}


def test_spike_count():
    log = [{"step": s, "loss": 1.0, "loss_max": 1.5} for s in range(10, 410, 10)]
    assert compare.count_spikes(log, "loss") == 0
    log[30]["loss_max"] = 2.5  # > 2 x the median of the 20 previous window means
    log[5]["loss_max"] = 9.0  # within the first 10% of training: warm-up, not counted
    assert compare.count_spikes(log, "loss") == 1


def test_cifar10_through_tfds_mock(tmp_path):
    """CIFAR-10 (RGB 32x32) through the TFDS path with mock data: train 2 steps, evaluate."""
    config = addunet_mtl.get_config("tiny")
    config.data.update(dataset="tfds:cifar10", grayscale=False, val_examples=8)
    config.update(total_steps=2)
    config.eval.update(max_examples=8, modulation_examples=8, grid_images=0, sigmas=(25,))
    with tfds.testing.mock_data(num_examples=24, policy=tfds.testing.MockPolicy.USE_CODE):
        experiment.train_and_evaluate(config, str(tmp_path))
        markdown = experiment.evaluate(str(tmp_path))
    assert "`cifar10/test`, 8 images 32x32x3" in markdown
    with open(tmp_path / "eval" / "results.json") as f:
        assert 0.0 < json.load(f)["scores"]["25"]["ssim"] <= 1.0
