"""Labelled-image plumbing shared by the methods that classify (multitask, cdn): the
train / held-out / test splits of ``config.data``, the resumable training stream, and the
fixed evaluation noise."""

import dataclasses

import jax
import jax.numpy as jnp
import ml_collections

from jaxden import data, metrics, noise


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


def load_test(config: ml_collections.ConfigDict):
    """(test split, clean images, labels, whether SSIM applies) for evaluation, the split cut
    to ``config.eval.max_examples``."""
    test = load_split(config, "test", max_examples=config.eval.get("max_examples"))
    clean, labels = jnp.asarray(test.images), jnp.asarray(test.labels)
    return test, clean, labels, min(clean.shape[1:3]) >= metrics.SSIM_MIN_SIZE


def fixed_noisy(images: jax.Array, sigma: float, seed: int) -> jax.Array:
    """The noisy copy of ``images`` at ``sigma`` (0-255) used for evaluation: a function of
    (seed, sigma) only."""
    key = jax.random.fold_in(jax.random.key(seed), int(sigma))
    return noise.gaussian(key, jnp.asarray(images), sigma / 255.0)


def noisy_input_scores(clean: jax.Array, noisy: jax.Array, sigma: float,
                       with_ssim: bool) -> dict:
    """{"psnr", "ssim", "acc": None} of the noisy input itself, not clipped; all None at
    sigma 0, where the input is the clean image (PSNR infinite)."""
    if sigma == 0:
        return {"psnr": None, "ssim": None, "acc": None}
    return {"psnr": float(jnp.mean(metrics.psnr_jit(noisy, clean))),
            "ssim": float(jnp.mean(metrics.ssim_jit(noisy, clean))) if with_ssim else None,
            "acc": None}


def train_stream(config: ml_collections.ConfigDict, process_index: int,
                 process_count: int) -> data.SamplerStream:
    """This process's share of the resumable stream over the "train" split."""
    sampler = data.ExampleSampler(load_split(config, "train"), seed=config.seed,
                                  flip=config.data.flip)
    return data.SamplerStream(sampler, config.batch_size, process_index, process_count)
