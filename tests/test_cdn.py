"""Classification-denoising method (issue 4): read-out, loss (against a second, per-sample
implementation), noise levels, rows, training on 8 devices and evaluation."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import tensorflow_datasets as tfds
from flax import nnx

from configs import cdn as cdn_configs
from jaxden import experiment, methods, tweedie
from jaxden.methods import cdn
from jaxden.methods.cdn_eval import row_label
from jaxden.models import GradResNetTiny
from jaxden.train.metrics_log import MetricsLog

K, FLOOR = 10, 1.0 / 255


def tiny(outputs=K + 1, seed=0):
    return GradResNetTiny(1, num_classes=outputs, sigma_conditioning=True, rngs=nnx.Rngs(seed))


KEYS = jax.random.split(jax.random.key(0), 3)
CLEAN = jax.random.uniform(KEYS[0], (4, 9, 7, 1))
SIGMA = jnp.array([0.5, 3.0, 25.0, 90.0]) / 255
NOISY = CLEAN + SIGMA[:, None, None, None] * jax.random.normal(KEYS[1], CLEAN.shape)
LABELS = jnp.array([0, 3, 9, 3])


def test_eps_read_out_classifies_on_h_and_denoises_with_the_scaled_energy():
    """f_c = e * H W / max(sigma, floor) + h_c: softmax f = softmax h, and D(y) matches
    y + sigma^2 (H W / max(sigma, floor) grad e + sum_c p(c|y) grad h_c) from per-sample
    jax.grad. In float64:
    f reaches 1e4 here, and float32 would keep only ~1e-3 of h."""
    with jax.enable_x64(True):
        model = tiny()
        nnx.update(model, jax.tree.map(lambda x: x.astype(jnp.float64), nnx.state(model)))
        noisy, sigma = NOISY.astype(jnp.float64), SIGMA.astype(jnp.float64)
        log_joint = cdn.make_log_joint(model, sigma, scale="eps", sigma_floor=FLOOR)
        out = model(noisy, sigma)
        np.testing.assert_allclose(tweedie.classify(log_joint, noisy),
                                   jax.nn.log_softmax(out[:, 1:]), rtol=1e-9, atol=1e-9)
        denoised = tweedie.denoise(log_joint, noisy, sigma)
        for b in range(len(noisy)):
            def output(y, k, b=b):
                return model(y[None], sigma[b:b + 1])[0, k]

            y, s = noisy[b], sigma[b]
            p = jax.nn.softmax(out[b, 1:])
            grad_h = sum(p[c] * jax.grad(output)(y, c + 1) for c in range(K))
            scale = 9 * 7 / max(float(s), FLOOR)  # sigma = 0.5/255 is below the floor
            expected = y + s**2 * (scale * jax.grad(output)(y, 0) + grad_h)
            np.testing.assert_allclose(denoised[b], expected, rtol=1e-9, atol=1e-9)
    with pytest.raises(ValueError, match="log_joint_scale"):
        cdn.make_log_joint(model, SIGMA, scale="temperature", sigma_floor=FLOOR)


def _loss_config(ce=1.0, dsm=1.0, conditional=0.0, weighting="mse"):
    config = cdn_configs.get_config("tiny")
    config.loss.update(ce_weight=ce, dsm_weight=dsm, conditional_dsm_weight=conditional,
                       dsm_weighting=weighting)
    return config.loss


@pytest.mark.parametrize("weighting", ["mse", "score"])
def test_loss_matches_a_per_sample_second_implementation(weighting):
    model = tiny()
    loss, m = cdn.cdn_loss(model, CLEAN, LABELS, NOISY, SIGMA,
                           loss_config=_loss_config(0.7, 0.2, 0.5, weighting), scale="eps",
                           sigma_floor=FLOOR)

    def f_one(y, s):  # the read-out for one image, written out again
        out = model(y[None], s[None])[0]
        return out[1:] + out[0] * y.shape[0] * y.shape[1] / jnp.maximum(s, FLOOR)

    ce, dsm, dsm_c = [], [], []
    for b in range(len(CLEAN)):
        y, s, c = NOISY[b], SIGMA[b], LABELS[b]
        f = f_one(y, s)
        ce.append(-jax.nn.log_softmax(f)[c])
        d = y + s**2 * jax.grad(lambda y: jax.nn.logsumexp(f_one(y, s)))(y)
        d_c = y + s**2 * jax.grad(lambda y: f_one(y, s)[c])(y)
        w = 1.0 if weighting == "mse" else (25 / 255 / s) ** 2
        dsm.append(w * jnp.sum((d - CLEAN[b]) ** 2))
        dsm_c.append(w * jnp.sum((d_c - CLEAN[b]) ** 2))
    np.testing.assert_allclose(m["loss_ce"], np.mean(ce), rtol=1e-4)
    np.testing.assert_allclose(m["loss_dsm"], np.mean(dsm), rtol=1e-4)
    np.testing.assert_allclose(m["loss_dsm_conditional"], np.mean(dsm_c), rtol=1e-4)
    np.testing.assert_allclose(
        loss, 0.7 * np.mean(ce) + 0.2 * np.mean(dsm) + 0.5 * np.mean(dsm_c), rtol=1e-4)


def test_dsm_gradient_goes_through_the_input_gradient():
    """The DSM term depends on the parameters only through grad_y f: a nonzero, finite
    parameter gradient of it is the double backprop at work."""
    def dsm(model):
        return cdn.cdn_loss(model, CLEAN, LABELS, NOISY, SIGMA, loss_config=_loss_config(0, 1),
                            scale="eps", sigma_floor=FLOOR)[1]["loss_dsm"]

    grads = jax.tree.leaves(nnx.grad(dsm)(tiny()))
    assert all(np.all(np.isfinite(g)) for g in grads)
    assert sum(float(jnp.sum(g**2)) for g in grads) > 0


def test_rows_skip_what_they_do_not_train():
    _, classifier = cdn.cdn_loss(tiny(), CLEAN, LABELS, NOISY, SIGMA,
                                 loss_config=_loss_config(1, 0), scale="eps", sigma_floor=FLOOR)
    assert "loss_dsm" not in classifier and "train_psnr" not in classifier
    loss, denoiser = cdn.cdn_loss(tiny(), CLEAN, LABELS, NOISY, SIGMA,
                                  loss_config=_loss_config(0, 1), scale="eps", sigma_floor=FLOOR)
    np.testing.assert_allclose(loss, denoiser["loss_dsm"])
    labels = {row: row_label(cdn_configs.get_config(f"quick,{row}")) for row in cdn_configs.ROWS}
    assert labels == {"joint": "CDN joint", "classifier": "CDN classifier-only",
                      "denoiser": "CDN denoiser-only", "clean_classifier": "CDN classifier-only"}
    clean = cdn_configs.get_config("quick,clean_classifier")
    assert clean.noise.sigma_max < 1 and clean.log_joint_scale == "none"
    with pytest.raises(ValueError, match="joint, classifier"):
        cdn_configs.get_config("quick,both")


def test_noise_levels_are_log_uniform():
    s = np.asarray(cdn.sample_sigma_log_uniform(jax.random.key(3), 20000, 0.01, 1.0))
    assert s.min() >= 0.01 and s.max() <= 1.0
    counts, _ = np.histogram(np.log10(s), bins=4, range=(-2, 0))
    np.testing.assert_allclose(counts / len(s), 0.25, atol=0.02)  # uniform in log sigma


def test_bad_loss_settings_name_the_key():
    config = cdn_configs.get_config("tiny")
    config.noise.sigma_min = 0.0
    with pytest.raises(ValueError, match="sigma_min"):
        methods.get("cdn").make_loss(config)
    config = cdn_configs.get_config("tiny")
    config.loss.dsm_weighting = "snr"
    with pytest.raises(ValueError, match="dsm_weighting"):
        methods.get("cdn").make_loss(config)


def test_train_on_eight_devices_and_evaluate(tmp_path):
    config = cdn_configs.get_config("tiny")
    config.loss.conditional_dsm_weight = 0.5
    experiment.train_and_evaluate(config, str(tmp_path))
    last = MetricsLog(str(tmp_path)).read()[-1]
    for key in ("loss", "loss_ce", "loss_dsm", "loss_dsm_conditional", "train_acc",
                "val_psnr_s25", "val_acc_s25"):
        assert np.isfinite(last[key]), key
    experiment.evaluate(str(tmp_path))
    with open(tmp_path / "eval" / "results.json") as f:
        results = json.load(f)
    assert results["label"] == "CDN joint" and results["tasks"] == ["denoise", "classify"]
    assert results["scores"]["0"]["psnr"] is None  # D(y) = y on clean input
    assert 0 <= results["scores"]["0"]["acc"] <= 1
    for key in ("scores", "conditional_true", "conditional_predicted"):
        assert np.isfinite(results[key]["100"]["psnr"]), key
    assert os.path.getsize(tmp_path / "eval" / "grid.png") > 0


def test_cifar10_through_tfds_mock(tmp_path):
    config = cdn_configs.get_config("tiny")
    config.data.update(dataset="tfds:cifar10", grayscale=False, val_examples=8)
    config.update(total_steps=2)
    config.eval.update(max_examples=8, grid_images=0, sigmas=(25,))
    with tfds.testing.mock_data(num_examples=24, policy=tfds.testing.MockPolicy.USE_CODE):
        experiment.train_and_evaluate(config, str(tmp_path))
        markdown = experiment.evaluate(str(tmp_path))
    assert "`cifar10/test`, 8 images 32x32x3" in markdown
