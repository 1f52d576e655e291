"""Classification-denoising network (Thiry & Guth, arXiv 2410.03505) on Fashion-MNIST.

``--config configs/cdn.py:VARIANT[,ROW]``

Variants:
- ``default``: for real hardware (GPU/TPU): GradResNet widths (64, 128, 256), 2 blocks per
  stage, batch 128, 30k steps.
- ``quick``: the README table; each row trains in minutes on 2 CPU cores.
- ``tiny``: for tests only.

Rows (same backbone, data and budget; only the loss weights change):
- ``joint`` (the default row): CE on noisy inputs + DSM.
- ``classifier``: CE only (the same GradResNet as a plain classifier).
- ``denoiser``: DSM only (the same GradResNet as an energy-gradient denoiser).
- ``clean_classifier``: CE only on (almost) clean images, sigma in [0.01, 0.02], logits read
  directly (``log_joint_scale="none"``): the plain classifier of the robustness table
  (issue 5); the ``classifier`` row trains on noisy inputs.

CIFAR-10: ``--config.data.dataset=tfds:cifar10 --config.data.grayscale=False`` (prepared TFDS).
"""

import ml_collections
from ml_collections import config_dict

ROWS = {
    "joint": {},
    "classifier": {"dsm_weight": 0.0},
    "denoiser": {"ce_weight": 0.0},
    "clean_classifier": {"dsm_weight": 0.0},
}
CLEAN_SIGMA_RANGE = (0.01, 0.02)  # 0-255 scale: log-uniform levels need 0 < min < max


def get_config(arg: str = "default") -> ml_collections.ConfigDict:
    variant, _, row = arg.partition(",")
    row = row or "joint"
    if row not in ROWS:
        raise ValueError(f"unknown row {row!r}; choose one of {', '.join(ROWS)}")
    c = ml_collections.ConfigDict()
    c.method = "cdn"
    c.seed = 0
    c.row = row

    c.data = ml_collections.ConfigDict(dict(
        dataset="fashion_mnist",  # fashion_mnist | digits | tfds:NAME
        data_dir=config_dict.placeholder(str),
        grayscale=True,
        val_examples=5000,
        flip=False,
    ))
    # Noise levels on the 0-255 scale, drawn log-uniformly per sample.
    c.noise = ml_collections.ConfigDict(dict(sigma_min=1.0, sigma_max=100.0))
    c.model = ml_collections.ConfigDict(dict(
        name="gradresnet",
        num_classes=10,
        widths=(64, 128, 256),
        blocks_per_stage=2,
        groups=8,
        sigma_conditioning=True,
        conv_impl="auto",  # auto | xla | matmul (faster DSM steps and microbatches on CPU)
    ))
    c.log_joint_scale = "eps"  # eps: f = g * H * W / sigma | none: f = g
    c.loss = ml_collections.ConfigDict(dict(
        ce_weight=1.0,
        # DSM sums squared errors over pixels; at 1.0 its gradient swamped CE's (CE stayed at
        # chance for 200 quick steps); at 0.1 both train (measured, quick variant).
        dsm_weight=0.1,
        conditional_dsm_weight=0.0,
        dsm_weighting="mse",  # mse: w = 1 | score: w = (25/255 / sigma)^2
    ))
    c.batch_size = 128
    # Split each batch into this many parts, one forward/backward at a time (gradient
    # accumulation: same update, about 1/microbatches of the activation memory).
    c.microbatches = 1
    c.total_steps = 30_000
    c.optimizer = ml_collections.ConfigDict(dict(
        name="adam", learning_rate=1e-3, schedule="cosine", warmup_steps=500, end_lr=1e-6,
        grad_clip_norm=1.0,
    ))
    c.log_every_steps = 10
    c.checkpoint_every_steps = 2000
    c.eval_every_steps = 2000
    c.max_checkpoints_to_keep = 3

    c.eval = ml_collections.ConfigDict(dict(
        sigmas=(0, 15, 25, 50, 100),
        seed=1234,
        max_examples=config_dict.placeholder(int),  # of the test split; None: all
        batch_size=500,
        val_examples=1000,
        grid_images=6,
        grid_sigma=50,
    ))

    if variant == "quick":
        c.model.update(widths=(16, 32, 64), blocks_per_stage=1)
        c.batch_size = 32
        c.total_steps = 2500
        c.optimizer.update(learning_rate=2e-3, warmup_steps=100)
        c.checkpoint_every_steps = 500
        c.eval_every_steps = 500
        # D(y, c) and D(y, c_hat) cost a backward pass each: the whole test split at 5 sigmas
        # took over 10 minutes on 2 busy cores, so quick evaluates the first 2000 test images.
        c.eval.max_examples = 2000
    elif variant == "tiny":
        c.model.update(name="gradresnet_tiny", widths=(4, 8), blocks_per_stage=1, groups=2)
        c.data.update(dataset="digits", val_examples=100)
        c.batch_size = 8
        c.total_steps = 4
        c.optimizer.update(warmup_steps=1)
        c.log_every_steps = 2
        c.checkpoint_every_steps = 2
        c.eval_every_steps = 2
        c.eval.update(max_examples=24, batch_size=8, val_examples=16, grid_images=2)
    elif variant != "default":
        raise ValueError(f"unknown variant {variant!r}; choose default, quick or tiny")
    c.loss.update(ROWS[row])
    if row == "clean_classifier":
        c.noise.update(sigma_min=CLEAN_SIGMA_RANGE[0], sigma_max=CLEAN_SIGMA_RANGE[1])
        # the "eps" read-out's e H W / sigma term is ~1e7 at these sigma and would swamp the
        # class scores in float32 (CE stayed near 3.9); a plain classifier reads f directly
        c.log_joint_scale = "none"
    return c
