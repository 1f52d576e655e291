"""DLW method (issue 6): hand-made weights, the bilevel loss's hypergradient (implicit against
long unrolling, through the weight net), training on 8 devices and evaluation."""

import json
import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from flax import nnx

from configs import dlw as dlw_configs
from jaxden import experiment, noise
from jaxden.methods import dlw
from jaxden.models import DLWNetTiny
from jaxden.train.metrics_log import MetricsLog


def smooth_images(shape, seed=0):
    """Smooth random images in [0.2, 0.8]: a few low-frequency cosines per channel."""
    b, h, w, c = shape
    yy, xx = jnp.meshgrid(jnp.linspace(0, 1, h), jnp.linspace(0, 1, w), indexing="ij")
    f = jax.random.uniform(jax.random.key(seed), (b, 1, 1, c, 2), minval=1.0, maxval=3.0)
    return 0.5 + 0.3 * jnp.cos(f[..., 0] * yy[None, :, :, None]) * jnp.cos(
        f[..., 1] * xx[None, :, :, None])


def test_robust_weights_down_weight_impulses():
    clean = smooth_images((4, 24, 24, 3))
    noisy, info = noise.impulse(jax.random.key(1), clean, 0.2, return_info=True)
    w = dlw.robust_weights(noisy)
    np.testing.assert_allclose(jnp.mean(w, axis=(1, 2, 3)), 1 + dlw.WEIGHT_FLOOR, rtol=1e-5)
    hit = info["mask"]
    assert float(jnp.mean(w[hit])) < 0.2 * float(jnp.mean(w[~hit]))


def test_hypergradient_implicit_matches_long_unrolling():
    """d/dtheta of the bilevel loss through DLWNet and weighted TV: implicit (converged)
    against 3000 unrolled iterations."""
    config = dlw_configs.get_config("tiny")
    net = DLWNetTiny(3, rngs=nnx.Rngs(0))
    graphdef, params = nnx.split(net)
    clean = smooth_images((2, 10, 9, 3))
    noisy = noise.NOISE_TYPES["impulse"](jax.random.key(2), clean)

    def grad(mode, max_iter):
        c = config.copy_and_resolve_references()
        c.dlw.update(mode=mode, max_iter=max_iter, tol=1e-7, linear_tol=1e-5)

        def loss(p):
            return dlw.bilevel_loss(nnx.merge(graphdef, p), clean, noisy, c)[0]

        return jax.jit(jax.grad(loss))(params)

    implicit, unrolled = grad("implicit", 20000), grad("unrolled", 3000)
    flat_i = jnp.concatenate([g.ravel() for g in jax.tree.leaves(implicit)])
    flat_u = jnp.concatenate([g.ravel() for g in jax.tree.leaves(unrolled)])
    assert float(jnp.linalg.norm(flat_i)) > 0
    assert float(jnp.linalg.norm(flat_i - flat_u) / jnp.linalg.norm(flat_u)) < 1e-3


def test_linear_max_iter_caps_the_adjoint_solve(capfd):
    """``dlw.linear_max_iter`` reaches the solvers' adjoint solve (whose warning names the
    cap), and a config saved before the key existed still trains (cap: max_iter)."""
    config = dlw_configs.get_config("tiny")
    graphdef, params = nnx.split(DLWNetTiny(3, rngs=nnx.Rngs(0)))
    clean = smooth_images((2, 10, 9, 3))
    noisy = noise.NOISE_TYPES["impulse"](jax.random.key(2), clean)

    def grad(c):
        loss = lambda p: dlw.bilevel_loss(nnx.merge(graphdef, p), clean, noisy, c)[0]  # noqa: E731
        return jax.block_until_ready(jax.jit(jax.grad(loss))(params))

    config.dlw.update(tol=1e-6, linear_tol=1e-9, linear_max_iter=3)
    grad(config)
    assert "after 3 step-VJPs (linear_max_iter=3)" in capfd.readouterr().err
    saved = config.dlw.to_dict()
    del saved["linear_max_iter"]
    config.dlw = ml_collections.ConfigDict(saved)
    grads = grad(config)
    assert all(bool(jnp.all(jnp.isfinite(g))) for g in jax.tree.leaves(grads))


def test_unknown_model_names_the_choices():
    config = dlw_configs.get_config("tiny")
    config.dlw.sources = ("tv", "wnnm")
    with pytest.raises(ValueError, match="config.dlw.sources=.*name one or more of"):
        dlw.DLW().make_loss(config)


def test_remat_needs_unrolled_mode():
    config = dlw_configs.get_config("tiny")
    config.dlw.remat = True
    with pytest.raises(ValueError, match="config.dlw.remat=True applies to "
                                         "config.dlw.mode='unrolled' only"):
        dlw.DLW().make_loss(config)
    config.dlw.mode = "unrolled"
    dlw.DLW().make_loss(config)
    config.dlw.mode = "adjoint"
    with pytest.raises(ValueError, match="config.dlw.mode='adjoint': choose one of"):
        dlw.DLW().make_loss(config)


def test_upper_losses_against_numpy():
    """"mse": the batch MSE; "log_mse": the mean over patches of log(patch MSE), so that a
    patch (or a model) with 100x the error weighs no more than others."""
    rng = np.random.default_rng(0)
    clean = rng.uniform(size=(3, 5, 4, 2))
    scale = np.array([1.0, 10.0, 0.1])[:, None, None, None]
    x = clean + scale * rng.normal(size=clean.shape)
    per_patch = ((x - clean) ** 2).reshape(3, -1).mean(axis=1)
    np.testing.assert_allclose(dlw.upper_loss(jnp.asarray(x), jnp.asarray(clean), "mse"),
                               per_patch.mean(), rtol=1e-5)
    np.testing.assert_allclose(dlw.upper_loss(jnp.asarray(x), jnp.asarray(clean), "log_mse"),
                               np.log(per_patch).mean(), rtol=1e-5)
    exact = dlw.upper_loss(jnp.asarray(clean), jnp.asarray(clean), "log_mse")
    np.testing.assert_allclose(exact, np.log(1e-10), rtol=1e-6)  # finite, and so its gradient
    assert np.all(np.isfinite(jax.grad(lambda x: dlw.upper_loss(x, jnp.asarray(clean), "log_mse"))(
        jnp.asarray(clean))))
    config = dlw_configs.get_config("tiny")
    config.dlw.upper_loss = "psnr"
    with pytest.raises(ValueError, match="config.dlw.upper_loss='psnr': choose one of"):
        dlw.DLW().make_loss(config)


def test_train_on_eight_devices_and_evaluate(tmp_path):
    config = dlw_configs.get_config("tiny")
    experiment.train_and_evaluate(config, str(tmp_path))
    last = MetricsLog(str(tmp_path)).read()[-1]
    for key in ("loss", "loss_tv", "residual_tv", "iterations_tv", "val_psnr_tv",
                "val_psnr_tv_unweighted"):
        assert np.isfinite(last[key]), key
    assert 0 < last["iterations_tv"] <= config.dlw.max_iter
    markdown = experiment.evaluate(str(tmp_path))
    assert "| impulse | tv (source) |" in markdown and "| mixed | nuclear (unseen) |" in markdown
    with open(tmp_path / "eval" / "results.json") as f:
        results = json.load(f)
    assert len(results["rows"]) == 4  # 2 noise types x (1 source + 1 target)
    splits = results["weight_on_hit_vs_rest"]
    assert set(splits) == {"impulse", "mixed"} and "| impulse | " in markdown
    assert all(v > 0 for split in splits.values() for pair in split.values() for v in pair)
    for row in results["rows"]:
        assert set(row["scores"]) == {"noisy", "unweighted", "hand-made", "DLW"}
        assert all(np.isfinite(v[0]) for v in row["scores"].values())
    assert os.path.getsize(tmp_path / "eval" / "weights.png") > 0
