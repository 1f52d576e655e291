"""Single-task denoising (AddUNet or any denoiser in ``jaxden.models``), blind Gaussian noise.

Training (DnCNN-B style blind training, Zhang et al. 2017): clean patches x, per-sample
sigma ~ U[sigma_min, sigma_max] (config on the 0-255 scale), y = x + sigma * eps, loss
mean((D(y) - x)^2) (``config.loss = "mse"``) or mean|D(y) - x| (``"l1"``).
Evaluation: the test images at each ``config.eval.sigmas``, beside the noisy input, TV and BM3D.
"""

import functools
import os
import sys
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import nnx

from jaxden import baselines, data, evaluate, metrics, noise
from jaxden.models import build_model

LOSSES = ("mse", "l1")
_psnr, _ssim = metrics.psnr_jit, metrics.ssim_jit


def channels(config: ml_collections.ConfigDict) -> int:
    return 1 if config.data.grayscale else 3


def apply_fn(model: nnx.Module):
    """A jitted ``fn(y) -> D(y)`` for one model (nnx.split -> jax.jit -> nnx.merge)."""
    graphdef, state = nnx.split(model)
    run = jax.jit(lambda state, y: nnx.merge(graphdef, state)(y))
    return functools.partial(run, state)


def reconstruction_loss(kind: str, denoised: jax.Array, clean: jax.Array) -> jax.Array:
    if kind == "mse":
        return jnp.mean((denoised - clean) ** 2)
    if kind == "l1":
        return jnp.mean(jnp.abs(denoised - clean))
    raise ValueError(f"config.loss={kind!r}; choose one of {LOSSES}")


def patch_sampler(config, spec: str, patches_per_image: int, seed: int, augment: bool):
    """A ``PatchSampler`` of ``config.data.patch_size`` patches of the images of ``spec``."""
    images = data.load_images(spec, grayscale=config.data.grayscale)
    return data.PatchSampler(images, patch_size=config.data.patch_size,
                             patches_per_image=patches_per_image, seed=seed, augment=augment)


def patch_train_stream(config, process_index: int, process_count: int) -> data.SamplerStream:
    """This process's share of the resumable patch stream over ``config.data.train``."""
    sampler = patch_sampler(config, config.data.train, config.data.patches_per_image,
                            config.seed, config.data.augment)
    return data.SamplerStream(sampler, config.batch_size, process_index, process_count)


class Denoise:
    name = "denoise"

    def build_model(self, config):
        return build_model(config.model, in_channels=channels(config),
                           rngs=nnx.Rngs(config.seed))

    def train_data(self, config, process_index, process_count):
        return patch_train_stream(config, process_index, process_count)

    def make_loss(self, config):
        lo, hi = config.noise.sigma_min / 255.0, config.noise.sigma_max / 255.0
        kind = config.loss
        reconstruction_loss(kind, jnp.zeros(()), jnp.zeros(()))  # validate the name early

        def loss_fn(model, batch, key):
            clean = batch["image"]
            noisy, _ = noise.gaussian_blind(key, clean, lo, hi)
            denoised = model(noisy)
            mse = jnp.mean((jnp.clip(denoised, 0.0, 1.0) - clean) ** 2)
            train_psnr = -10.0 * jnp.log10(mse)  # of the whole batch: finite unless all exact
            return reconstruction_loss(kind, denoised, clean), {"train_psnr": train_psnr}

        return loss_fn

    def make_validate(self, config):
        """PSNR on fixed noisy patches of held-out scenes (``config.data.val``)."""
        if not config.data.get("val"):
            return None
        n = config.eval.val_patches
        sampler = patch_sampler(config, config.data.val, max(1, n // 4), config.seed + 1, False)
        clean = jnp.asarray(sampler.batch(0, n))
        sigmas = list(config.eval.sigmas)
        keys = [jax.random.fold_in(jax.random.key(config.eval.seed), s) for s in sigmas]
        noisy = [noise.gaussian(k, clean, s / 255.0) for k, s in zip(keys, sigmas)]

        def validate(model):
            run = apply_fn(model)
            return {f"val_psnr_s{s}": float(jnp.mean(_psnr(jnp.clip(run(y), 0, 1), clean)))
                    for s, y in zip(sigmas, noisy)}

        return validate

    def evaluate(self, model, config, workdir: str, step: int) -> str:
        return evaluate_denoiser(model, config, workdir, step)


def _noisy_pairs(images, sigma: int, seed: int):
    """(name, clean, noisy) with noise fixed by (seed, sigma, image index)."""
    base = jax.random.key(seed)
    for i, (name, x) in enumerate(images):
        key = jax.random.fold_in(jax.random.fold_in(base, sigma), i)
        yield name, x, np.asarray(noise.gaussian(key, jnp.asarray(x), sigma / 255.0))


def _crop(images, size):
    if not size:
        return images
    out = []
    for name, x in images:
        h, w = x.shape[:2]
        t, l = max(0, (h - size) // 2), max(0, (w - size) // 2)
        out.append((name, x[t:t + size, l:l + size]))
    return out


def _tuned_tv_weights(config, sigmas) -> dict[int, float]:
    """TV weight per sigma, tuned on held-out crops with noise of another seed."""
    val = data.load_images(config.data.val, grayscale=config.data.grayscale)
    val = _crop(val[: config.eval.tv_tune_images], config.eval.crop or 256)
    return {s: baselines.tune_tv_weight(list((x, y) for _, x, y in
                                             _noisy_pairs(val, s, config.eval.seed + 1)), _psnr)
            for s in sigmas}


def _denoisers(model, config, tv_weights):
    """name -> fn(noisy HWC image, sigma on 0-255) -> output, for every row of the table."""
    run = apply_fn(model)
    fns = {"noisy": lambda y, s: y, "TV": lambda y, s: baselines.tv(y, tv_weights[s])}
    if config.eval.bm3d:
        fns["BM3D"] = lambda y, s: baselines.bm3d(y, s / 255.0)
    fns[model_label(config)] = lambda y, s: np.clip(np.asarray(run(y[None])[0]), 0.0, 1.0)
    return fns


def _header(config, step, num_images, tv_weights, seconds) -> str:
    ev = config.eval
    crop = f"centre crops {ev.crop}x{ev.crop}" if ev.crop else "full size"
    colour = "grayscale (skimage rgb2gray)" if config.data.grayscale else "RGB"
    return "\n".join([
        f"# Denoising results: {model_label(config)}, checkpoint step {step}",
        "",
        f"- Data: `{ev.dataset}` ({num_images} images, {crop}, {colour}). "
        "Not comparable to Set12/BSD68 numbers.",
        f"- Noise: additive white Gaussian, σ on the 0-255 scale, not clipped; noise fixed by "
        f"eval seed {ev.seed}. Training seed {config.seed}.",
        "- PSNR: data_range=1, full image, outputs clipped to [0,1]. SSIM: Gaussian window 11, "
        "σ=1.5, as scikit-image `structural_similarity(gaussian_weights=True, "
        "use_sample_covariance=False)`, mean over channels.",
        f"- TV: Chambolle (scikit-image), weight tuned per σ on held-out `{config.data.val}` "
        "crops: " + ", ".join(f"σ={s}: {w:.3g}" for s, w in tv_weights.items())
        + (". BM3D: PyPI `bm3d`, true σ." if ev.bm3d else "."),
        "- Seconds spent per method (all images and σ): "
        + ", ".join(f"{m} {t:.1f}" for m, t in seconds.items() if m != "noisy"),
        f"- Command: `python {' '.join(sys.argv)}`",
    ])


def evaluate_denoiser(model, config, workdir: str, step: int) -> str:
    """Denoise the test images at each sigma with the model and the baselines; write
    results.md, results.json and grid.png in ``workdir/eval``; return the markdown."""
    ev = config.eval
    images = _crop(data.load_images(ev.dataset, grayscale=config.data.grayscale), ev.crop)
    tv_weights = _tuned_tv_weights(config, ev.sigmas)
    fns = _denoisers(model, config, tv_weights)
    scores = {k: {m: {s: {} for s in ev.sigmas} for m in fns} for k in ("psnr", "ssim")}
    seconds, grid = dict.fromkeys(fns, 0.0), []
    for sigma in ev.sigmas:
        for name, x, y in _noisy_pairs(images, sigma, ev.seed):
            outs = {}
            for m, fn in fns.items():
                t = time.perf_counter()
                outs[m] = fn(y, sigma)
                seconds[m] += time.perf_counter() - t
                scores["psnr"][m][sigma][name] = float(_psnr(outs[m], x))
                scores["ssim"][m][sigma][name] = float(_ssim(outs[m], x))
            if sigma == ev.grid_sigma and len(grid) < ev.grid_images:
                db = {m: scores["psnr"][m][sigma][name] for m in outs}
                grid.append((name, [("clean", x)] + [
                    (f"{m} σ={sigma} {db[m]:.2f} dB" if m == "noisy" else f"{m} {db[m]:.2f} dB",
                     out) for m, out in outs.items()]))
    outdir = os.path.join(workdir, "eval")
    if grid:
        evaluate.save_grid(os.path.join(outdir, "grid.png"), grid)
    return evaluate.write_results(
        outdir, _header(config, step, len(images), tv_weights, seconds), scores, list(ev.sigmas),
        {"step": step, "model": model_label(config), "tv_weights": tv_weights,
         "seconds": seconds, "config": config.to_dict()})


def model_label(config) -> str:
    m = config.model
    skip = m.get("skip", "gated")
    return f"{m.name} ({skip}{', fixed-res' if m.get('fixed_resolution') else ''})"
