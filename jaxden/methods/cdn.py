"""Classification-denoising network (Thiry & Guth, arXiv 2410.03505): one energy network
f_c(y) = log p(y, c) that classifies by a forward pass and denoises by ``jax.grad``.

Log-joint (PAPERS.md open question 1: the paper's read-out is not known). With
``config.log_joint_scale="eps"`` (the default) the network outputs K + 1 numbers per image, a
class-independent energy e(y) and class scores h_c(y), and

  f_c(y) = e(y) * H W / max(sigma, sigma_min) + h_c(y).

Every f can be written this way; the split keeps both tasks well scaled. Classification,
softmax_c f = softmax_c h, is an ordinary classifier on h. Denoising, D(y) = y + sigma^2
grad_y f = y + sigma H W grad_y e + sigma^2 sum_c p(c|y) grad_y h_c, makes -H W grad_y e a
unit-scale noise estimate at every sigma (noise-prediction scaling; H W undoes the read-out's
mean pooling). Scaling all of f by H W / sigma instead made the logits about 2e5 at sigma = 1
and the cross-entropy diverge (measured: CE 4e4 after 20 steps). ``"none"``: the network's K
outputs are f. sigma is floored at ``noise.sigma_min`` so f stays finite on clean inputs
(sigma = 0), where D(y) = y exactly. In float32 f carries about 1e-7 |f| of rounding, e.g.
1e-3 on the class scores when |f| is 1e4 (small sigma): negligible against their O(1) spread.

Training loss (PAPERS.md open question 3 for the choices): per sample sigma drawn
log-uniformly in [``noise.sigma_min``, ``noise.sigma_max``] (0-255 scale), y = x + sigma eps,

  L = ce_weight * CE(softmax f(y), c)                          (cross-entropy on noisy y)
    + dsm_weight * mean_b w(sigma_b) ||D(y_b) - x_b||^2        (denoising score matching)
    + conditional_dsm_weight * mean_b w(sigma_b) ||D(y_b, c_b) - x_b||^2

with ||.||^2 summed over pixels and w = 1 (``dsm_weighting="mse"``; the sigma^2-weighted
score matching of Song et al.) or w = (sigma_ref / sigma)^2 (``"score"``: lambda(sigma) =
sigma^2 on the score, sigma_ref = 25/255). D is ``jaxden.tweedie.denoise``, a
``jax.value_and_grad`` inside the loss, so training differentiates through grad_y f (double
backpropagation). With dsm weights 0 the loss skips the input gradient (a plain classifier).
"""

import jax
import jax.numpy as jnp
import ml_collections
from flax import nnx

from jaxden import metrics, noise, tweedie
from jaxden.methods.denoise import channels
from jaxden.methods.labelled import fixed_noisy, load_split, train_stream
from jaxden.models import build_model

SCALES = ("eps", "none")
DSM_WEIGHTINGS = ("mse", "score")
SIGMA_REF = 25.0 / 255.0
_psnr = metrics.psnr_jit


def sample_sigma_log_uniform(key, batch: int, sigma_min: float, sigma_max: float):
    """(batch,) noise levels, log-uniform in [sigma_min, sigma_max] (both > 0)."""
    u = jax.random.uniform(key, (batch,))
    return jnp.exp(jnp.log(sigma_min) + u * (jnp.log(sigma_max) - jnp.log(sigma_min)))


def num_outputs(config: ml_collections.ConfigDict) -> int:
    """The network's outputs: K class scores, plus the energy e with the "eps" read-out."""
    return config.model.num_classes + (config.log_joint_scale == "eps")


def check_scale(scale: str) -> None:
    if scale not in SCALES:
        raise ValueError(f"config.log_joint_scale={scale!r}; choose one of {SCALES}")


def make_log_joint(model: nnx.Module, sigma: jax.Array, *, scale: str, sigma_floor: float):
    """y -> f(y) (B, K) at noise levels ``sigma`` (B,) on the [0, 1] scale (module
    docstring)."""
    check_scale(scale)

    def log_joint(y):
        out = model(y, sigma)
        if scale == "none":
            return out
        energy, classes = out[:, :1], out[:, 1:]
        return classes + energy * (y.shape[1] * y.shape[2] / jnp.maximum(sigma, sigma_floor))[
            :, None]

    return log_joint


def dsm_weights(kind: str, sigma: jax.Array) -> jax.Array:
    if kind == "mse":
        return jnp.ones_like(sigma)
    if kind == "score":
        return (SIGMA_REF / sigma) ** 2
    raise ValueError(f"config.loss.dsm_weighting={kind!r}; choose one of {DSM_WEIGHTINGS}")


def cdn_loss(model, clean, labels, noisy, sigma, *, loss_config, scale: str,
             sigma_floor: float):
    """(L, metrics) of the module docstring for a batch of clean images, labels, their noisy
    versions and noise levels (B,)."""
    lc = loss_config
    log_joint = make_log_joint(model, sigma, scale=scale, sigma_floor=sigma_floor)

    def dsm(denoised):  # mean_b w(sigma_b) ||D_b - x_b||^2, summed over pixels
        per_image = jnp.sum((denoised - clean) ** 2, axis=(1, 2, 3))
        return jnp.mean(dsm_weights(lc.dsm_weighting, sigma) * per_image)

    out, loss = {}, 0.0
    if lc.dsm_weight > 0:
        denoised, log_probs = tweedie.denoise_and_classify(log_joint, noisy, sigma)
        out["loss_dsm"] = dsm(denoised)
        mse = jnp.mean((jnp.clip(denoised, 0.0, 1.0) - clean) ** 2)
        out["train_psnr"] = -10.0 * jnp.log10(mse)
        loss = lc.dsm_weight * out["loss_dsm"]
    else:
        log_probs = tweedie.classify(log_joint, noisy)
    out["loss_ce"] = -jnp.mean(jnp.take_along_axis(log_probs, labels[:, None], axis=-1))
    out["train_acc"] = jnp.mean(jnp.argmax(log_probs, -1) == labels)
    loss = loss + lc.ce_weight * out["loss_ce"]
    if lc.conditional_dsm_weight > 0:
        out["loss_dsm_conditional"] = dsm(tweedie.denoise(log_joint, noisy, sigma, labels))
        loss = loss + lc.conditional_dsm_weight * out["loss_dsm_conditional"]
    return loss, out


def denoiser_fn(model: nnx.Module, config: ml_collections.ConfigDict):
    """A jitted ``fn(y, sigma (B,) on [0, 1], label=None) -> (D, log p(c|y))``: D(y), or
    D(y, c) given labels (B,)."""
    graphdef, state = nnx.split(model)
    floor = config.noise.sigma_min / 255.0

    @jax.jit
    def run(state, y, sigma, label):
        log_joint = make_log_joint(nnx.merge(graphdef, state), sigma,
                                   scale=config.log_joint_scale, sigma_floor=floor)
        return tweedie.denoise_and_classify(log_joint, y, sigma, label)

    return lambda y, sigma, label=None: run(state, y, sigma, label)


class ClassificationDenoising:
    name = "cdn"

    def build_model(self, config):
        model_config = config.model.copy_and_resolve_references()
        model_config.num_classes = num_outputs(config)
        return build_model(model_config, in_channels=channels(config),
                           rngs=nnx.Rngs(config.seed))

    def train_data(self, config, process_index, process_count):
        return train_stream(config, process_index, process_count)

    def make_loss(self, config):
        lo, hi = config.noise.sigma_min / 255.0, config.noise.sigma_max / 255.0
        if not 0 < lo < hi:
            raise ValueError(f"config.noise: need 0 < sigma_min < sigma_max for log-uniform "
                             f"noise levels, got {config.noise.sigma_min} and "
                             f"{config.noise.sigma_max}")
        dsm_weights(config.loss.dsm_weighting, jnp.ones(()))  # validate names early
        check_scale(config.log_joint_scale)

        def loss_fn(model, batch, key):
            clean = batch["image"]
            key_sigma, key_noise = jax.random.split(key)
            sigma = sample_sigma_log_uniform(key_sigma, clean.shape[0], lo, hi)
            noisy = noise.gaussian(key_noise, clean, sigma)
            return cdn_loss(model, clean, batch["label"], noisy, sigma,
                            loss_config=config.loss, scale=config.log_joint_scale,
                            sigma_floor=lo)

        return loss_fn

    def make_validate(self, config):
        """Accuracy and PSNR of D(y) on held-out training examples at each positive
        ``eval.sigmas``."""
        val = load_split(config, "val", max_examples=config.eval.val_examples)
        clean, labels = jnp.asarray(val.images), jnp.asarray(val.labels)
        sigmas = [s for s in config.eval.sigmas if s > 0]
        noisy = {s: fixed_noisy(clean, s, config.eval.seed + 1) for s in sigmas}

        def validate(model):
            run, out = denoiser_fn(model, config), {}
            for s, y in noisy.items():
                denoised, log_probs = run(y, jnp.full(len(y), s / 255.0))
                out[f"val_psnr_s{s}"] = float(jnp.mean(_psnr(jnp.clip(denoised, 0, 1), clean)))
                out[f"val_acc_s{s}"] = float(jnp.mean(jnp.argmax(log_probs, -1) == labels))
            return out

        return validate

    def evaluate(self, model, config, workdir: str, step: int) -> str:
        from jaxden.methods.cdn_eval import evaluate_cdn

        return evaluate_cdn(model, config, workdir, step)
