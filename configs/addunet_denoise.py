"""AddUNet single-task blind Gaussian denoising on natural photos (mvtb-data).

Variants (``--config configs/addunet_denoise.py:VARIANT``):
- ``default``: for real hardware (GPU/TPU): width 64, 3 levels, 64x64 patches, batch 64.
- ``quick``: the README demo, train + eval in about 10 minutes on 2 CPU cores.
- ``tiny``: for tests only.
Any field can be overridden from the command line, e.g. ``--config.model.skip=concat``.
Noise levels are on the 0-255 scale (sigma=25 means 25/255 on [0, 1] images).
"""

import ml_collections
from ml_collections import config_dict


def get_config(variant: str = "default") -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.method = "denoise"
    c.seed = 0

    c.data = ml_collections.ConfigDict(dict(
        # Dataset specs: mvtb:train|val|all, testimages, folder:/path, tfds:NAME[:SPLIT].
        train="mvtb:train",
        val="mvtb:val",
        grayscale=True,
        patch_size=64,
        patches_per_image=512,  # the per-image cap of the patch pool
        augment=True,  # the 8 flips/rotations
    ))
    c.noise = ml_collections.ConfigDict(dict(sigma_min=0.0, sigma_max=55.0))  # blind range
    c.model = ml_collections.ConfigDict(dict(
        name="addunet",
        width=64,
        levels=3,
        convs_per_block=2,
        skip="gated",  # gated | add | concat | none
        gate="scalar",  # scalar | channel
        gate_init=1.0,
        residual=True,
        fixed_resolution=False,
        kernel_sizes=config_dict.placeholder(tuple),
        norm="none",
        activation="relu",
    ))
    c.loss = "mse"  # mse | l1
    c.batch_size = 64
    # Split each batch into this many parts, one forward/backward at a time (gradient
    # accumulation: same update, about 1/microbatches of the activation memory).
    c.microbatches = 1
    c.total_steps = 100_000
    c.optimizer = ml_collections.ConfigDict(dict(
        name="adam", learning_rate=1e-3, schedule="cosine", warmup_steps=1000, end_lr=1e-6,
        grad_clip_norm=config_dict.placeholder(float),
    ))
    c.log_every_steps = 100
    c.checkpoint_every_steps = 5000
    c.eval_every_steps = 5000
    c.max_checkpoints_to_keep = 3

    c.eval = ml_collections.ConfigDict(dict(
        dataset="testimages",
        sigmas=(15, 25, 50),
        seed=1234,
        crop=0,  # 0: full images; N: centre N x N crops
        bm3d=True,
        tv_tune_images=4,  # held-out images used to tune the TV weight per sigma
        val_patches=128,  # fixed held-out patches for val_psnr during training
        grid_images=3,
        grid_sigma=25,
    ))

    if variant == "quick":
        # Measured on 2 CPU cores: ~12 steps/s, so ~7 min of training; batch 8 x 5000 steps beat
        # batch 16 x 2000 steps and 2 levels on held-out PSNR at the same compute.
        c.model.update(width=32, levels=3, convs_per_block=2)
        c.data.update(patch_size=48, patches_per_image=128)
        c.batch_size = 8
        c.total_steps = 5000
        c.optimizer.update(learning_rate=2e-3, warmup_steps=100)
        c.log_every_steps = 100
        c.checkpoint_every_steps = 1000
        c.eval_every_steps = 1000
        c.eval.update(crop=256, val_patches=64)
    elif variant == "tiny":
        c.model.name = "addunet_tiny"
        c.model.update(width=4, levels=2, convs_per_block=1)
        c.data.update(patch_size=16, patches_per_image=4)
        c.batch_size = 8
        c.total_steps = 4
        c.optimizer.update(warmup_steps=1)
        c.log_every_steps = 2
        c.checkpoint_every_steps = 2
        c.eval_every_steps = 2
        c.eval.update(crop=32, tv_tune_images=1, val_patches=8, grid_images=1)
    elif variant != "default":
        raise ValueError(f"unknown variant {variant!r}; choose default, quick or tiny")
    return c
