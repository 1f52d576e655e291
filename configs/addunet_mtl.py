"""AddUNet multi-task denoising + classification on Fashion-MNIST (arXiv 2602.12649).

``--config configs/addunet_mtl.py:VARIANT[,ROW]``

Variants:
- ``default``: for real hardware (GPU/TPU): width 64, batch 128, 20k steps.
- ``quick``: the README comparison, each row trains in a few minutes on 2 CPU cores.
- ``tiny``: for tests only.

Rows of the comparison (same data, noise and budget; only the model and loss change):
- ``mtl`` (the default row): gated additive skips, L = L_den + lambda * L_cls, MLP head.
- ``concat``: the same with the standard U-Net concatenated skips.
- ``single_task``: the gated AddUNet denoiser alone (L_den, no head).
- ``classifier``: the same encoder and head alone (L_cls, no decoder).
- ``linear_probe``: ``mtl`` with a linear head ("limited classification capacity").
- ``decoder_tap``: ``mtl`` with the head on the last decoder block instead of the deepest
  features, so the skip gates are on the classifier's path (not in the paper).

Any field can be overridden, e.g. ``--config.seed=1`` or ``--config.cls_weight=0.5``; CIFAR-10
is ``--config.data.dataset=tfds:cifar10 --config.data.grayscale=False`` (a prepared TFDS set).
"""

import ml_collections
from ml_collections import config_dict

ROWS = {
    "mtl": {},
    "concat": {"skip": "concat"},
    "single_task": {"tasks": ("denoise",)},
    "classifier": {"tasks": ("classify",)},
    "linear_probe": {"head_hidden": ()},
    "decoder_tap": {"head_tap": "decoder"},
}


def get_config(arg: str = "default") -> ml_collections.ConfigDict:
    variant, _, row = arg.partition(",")
    row = row or "mtl"
    if row not in ROWS:
        raise ValueError(f"unknown row {row!r}; choose one of {', '.join(ROWS)}")
    c = ml_collections.ConfigDict()
    c.method = "multitask"
    c.seed = 0
    c.row = row

    c.data = ml_collections.ConfigDict(dict(
        # fashion_mnist (Debian dataset-fashion-mnist), digits (scikit-learn), tfds:NAME.
        dataset="fashion_mnist",
        data_dir=config_dict.placeholder(str),  # a folder of IDX files, or a TFDS data_dir
        grayscale=True,
        val_examples=5000,  # the last training examples, held out for validation
        flip=False,  # random left-right flips
    ))
    c.noise = ml_collections.ConfigDict(dict(sigma_min=0.0, sigma_max=55.0))
    c.model = ml_collections.ConfigDict(dict(
        name="addunet_mtl",
        tasks=("denoise", "classify"),
        num_classes=10,
        head_hidden=(128,),
        head_tap="deepest",  # deepest | decoder
        width=64,
        levels=3,
        convs_per_block=2,
        skip="gated",
        gate="scalar",
        gate_init=1.0,
        residual=True,
        fixed_resolution=False,
        kernel_sizes=config_dict.placeholder(tuple),
        norm="none",
        activation="relu",
    ))
    c.loss = "mse"  # L_den: mse | l1
    c.cls_weight = 0.01  # lambda
    c.batch_size = 128
    # Split each batch into this many parts, one forward/backward at a time (gradient
    # accumulation: same update, about 1/microbatches of the activation memory).
    c.microbatches = 1
    c.total_steps = 20_000
    c.optimizer = ml_collections.ConfigDict(dict(
        name="adam", learning_rate=1e-3, schedule="cosine", warmup_steps=500, end_lr=1e-6,
        grad_clip_norm=config_dict.placeholder(float),
    ))
    c.log_every_steps = 10
    c.checkpoint_every_steps = 2000
    c.eval_every_steps = 2000
    c.max_checkpoints_to_keep = 3

    c.eval = ml_collections.ConfigDict(dict(
        sigmas=(0, 15, 25, 50),
        seed=1234,
        max_examples=config_dict.placeholder(int),  # of the test split; None: all
        batch_size=500,
        val_examples=1000,  # of the held-out examples, for val metrics during training
        modulation_sigma=25,
        modulation_scales=(0.0, 0.5, 2.0),
        modulation_examples=2000,
        grid_images=6,
    ))

    if variant == "quick":
        c.model.update(width=32)
        # Measured on 2 CPU cores: ~5.5 steps/s, so ~4.5 min of training per row.
        c.batch_size = 32
        c.total_steps = 1500
        c.optimizer.update(learning_rate=2e-3, warmup_steps=100)
        c.checkpoint_every_steps = 500
        c.eval_every_steps = 500
    elif variant == "tiny":
        c.model.update(width=4, levels=2, convs_per_block=1, head_hidden=(8,))
        c.data.update(dataset="digits", val_examples=100)
        c.batch_size = 8
        c.total_steps = 4
        c.optimizer.update(warmup_steps=1)
        c.log_every_steps = 2
        c.checkpoint_every_steps = 2
        c.eval_every_steps = 2
        c.eval.update(max_examples=40, batch_size=16, val_examples=16, modulation_examples=16,
                      grid_images=2)
    elif variant != "default":
        raise ValueError(f"unknown variant {variant!r}; choose default, quick or tiny")
    c.model.update(ROWS[row])
    return c
