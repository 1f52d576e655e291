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

import dataclasses
import functools

import jax
import jax.numpy as jnp
import ml_collections
import optax
from flax import nnx

from jaxden import data, metrics, noise
from jaxden.methods.denoise import reconstruction_loss
from jaxden.models import build_model

_psnr = jax.jit(metrics.psnr)


def channels(config: ml_collections.ConfigDict) -> int:
    return 1 if config.data.grayscale else 3


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


def load_split(config: ml_collections.ConfigDict, split: str,
               max_examples: int | None = None) -> data.LabelledImages:
    """``config.data.dataset``'s ``split`` ("train", "val" or "test"); "train" and "val" are
    the training split minus / only its last ``config.data.val_examples`` examples. Checks the
    labels against ``config.model.num_classes``."""
    d = config.data
    source = "test" if split == "test" else "train"
    examples = data.load_labelled(d.dataset, split=source, grayscale=d.grayscale,
                                  data_dir=d.get("data_dir"),
                                  max_examples=max_examples if split == "test" else None)
    if examples.num_classes != config.model.num_classes:
        raise data.DataError(
            f"{examples.name} has {examples.num_classes} classes but config.model.num_classes="
            f"{config.model.num_classes}: set --config.model.num_classes={examples.num_classes}")
    if split == "test":
        return examples
    if not 0 < d.val_examples < len(examples):
        raise data.DataError(f"config.data.val_examples={d.val_examples}: hold out between 1 "
                             f"and {len(examples) - 1} of the {len(examples)} training examples")
    keep = slice(None, -d.val_examples) if split == "train" else slice(-d.val_examples, None)
    part = dataclasses.replace(examples, images=examples.images[keep],
                               labels=examples.labels[keep], name=f"{examples.name}[{split}]")
    return dataclasses.replace(part, images=part.images[:max_examples],
                               labels=part.labels[:max_examples])


def predict_fn(model: nnx.Module):
    """A jitted ``fn(y, gate_scale=None) -> (denoised, logits)`` (split -> jit -> merge)."""
    graphdef, state = nnx.split(model)
    run = jax.jit(lambda state, y, scale: nnx.merge(graphdef, state)(y, scale))
    return functools.partial(run, state)


def fixed_noisy(images: jax.Array, sigma: float, seed: int) -> jax.Array:
    """The noisy copy of ``images`` at ``sigma`` (0-255) used for evaluation: a function of
    (seed, sigma) only."""
    key = jax.random.fold_in(jax.random.key(seed), int(sigma))
    return noise.gaussian(key, jnp.asarray(images), sigma / 255.0)


class ExampleStream:
    def __init__(self, sampler: data.ExampleSampler, batch_size: int, process_index: int,
                 process_count: int):
        self.sampler, self.batch_size = sampler, batch_size
        self.process_index, self.process_count = process_index, process_count

    def batch(self, step: int):
        return self.sampler.batch(step, self.batch_size, process_index=self.process_index,
                                  process_count=self.process_count)


class MultiTask:
    name = "multitask"

    def build_model(self, config):
        return build_model(config.model, in_channels=channels(config),
                           rngs=nnx.Rngs(config.seed))

    def train_data(self, config, process_index, process_count):
        sampler = data.ExampleSampler(load_split(config, "train"), seed=config.seed,
                                      flip=config.data.flip)
        return ExampleStream(sampler, config.batch_size, process_index, process_count)

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
