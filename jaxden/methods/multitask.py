"""Joint denoising + classification with a multi-task AddUNet (Lakkavalli & Sinha,
arXiv 2602.12649): L = L_den + lambda * L_cls.

Training: labelled clean images x with labels c; per-sample sigma ~ U[sigma_min, sigma_max]
(0-255 scale, as in the denoise method), y = x + sigma * eps; the model returns
(D(y), logits(y)); L_den = mean((D(y) - x)^2) (``config.loss="mse"``) or mean|D(y) - x|
("l1"), L_cls = softmax cross-entropy of c under logits(y), i.e. on the *noisy* input, and
lambda = ``config.cls_weight``. A single-task model (``model.tasks=("denoise",)``) trains on
L_den alone and a classifier-only model (``("classify",)``) on L_cls alone, so all rows of the
comparison share this code, data and budget.

Data: ``config.data.dataset`` as in ``jaxden.data.load_labelled`` (Fashion-MNIST by default);
the last ``config.data.val_examples`` training examples are held out for validation during
training, and ``eval.py`` reports on the test split.
"""

import functools

import jax
import jax.numpy as jnp
import ml_collections
import optax
from flax import nnx

from jaxden import metrics, noise
from jaxden.methods.denoise import channels, reconstruction_loss
from jaxden.methods.labelled import fixed_noisy, load_split, train_stream
from jaxden.models import build_model

_psnr = metrics.psnr_jit


def tasks(config: ml_collections.ConfigDict) -> tuple[str, ...]:
    return tuple(config.model.tasks)


def joint_loss(denoised, logits, clean, labels, *, kind: str, cls_weight: float):
    """(L, metrics) with L = L_den + cls_weight * L_cls; a task whose output is None is left
    out (and then the other task's loss is L, unweighted)."""
    loss, out = 0.0, {}
    if denoised is not None:
        out["loss_den"] = reconstruction_loss(kind, denoised, clean)
        mse = jnp.mean((jnp.clip(denoised, 0.0, 1.0) - clean) ** 2)
        out["train_psnr"] = -10.0 * jnp.log10(mse)
        loss = out["loss_den"]
    if logits is not None:
        out["loss_cls"] = jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, labels))
        out["train_acc"] = jnp.mean(jnp.argmax(logits, -1) == labels)
        loss = loss + (cls_weight if denoised is not None else 1.0) * out["loss_cls"]
    return loss, out


def predict_fn(model: nnx.Module):
    """A jitted ``fn(y, gate_scale=None) -> (denoised, logits)`` (split -> jit -> merge)."""
    graphdef, state = nnx.split(model)
    run = jax.jit(lambda state, y, scale: nnx.merge(graphdef, state)(y, scale))
    return functools.partial(run, state)


class MultiTask:
    name = "multitask"

    def build_model(self, config):
        return build_model(config.model, in_channels=channels(config),
                           rngs=nnx.Rngs(config.seed))

    def train_data(self, config, process_index, process_count):
        return train_stream(config, process_index, process_count)

    def make_loss(self, config):
        lo, hi = config.noise.sigma_min / 255.0, config.noise.sigma_max / 255.0
        kind, cls_weight = config.loss, config.cls_weight
        reconstruction_loss(kind, jnp.zeros(()), jnp.zeros(()))  # validate the name early

        def loss_fn(model, batch, key):
            clean = batch["image"]
            noisy, _ = noise.gaussian_blind(key, clean, lo, hi)
            denoised, logits = model(noisy)
            return joint_loss(denoised, logits, clean, batch["label"], kind=kind,
                              cls_weight=cls_weight)

        return loss_fn

    def make_validate(self, config):
        """PSNR and accuracy on the held-out training examples, at each ``eval.sigmas``."""
        val = load_split(config, "val", max_examples=config.eval.val_examples)
        clean, labels = jnp.asarray(val.images), jnp.asarray(val.labels)
        noisy = {s: fixed_noisy(clean, s, config.eval.seed + 1) for s in config.eval.sigmas}

        def validate(model):
            run, out = predict_fn(model), {}
            for s, y in noisy.items():
                denoised, logits = run(y, None)
                if denoised is not None:
                    out[f"val_psnr_s{s}"] = float(jnp.mean(_psnr(jnp.clip(denoised, 0, 1),
                                                                 clean)))
                if logits is not None:
                    out[f"val_acc_s{s}"] = float(jnp.mean(jnp.argmax(logits, -1) == labels))
            return out

        return validate

    def evaluate(self, model, config, workdir: str, step: int) -> str:
        from jaxden.methods.multitask_eval import evaluate_multitask

        return evaluate_multitask(model, config, workdir, step)
