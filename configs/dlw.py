"""DLW: learned per-pixel fidelity weights trained bilevel through variational denoisers.

Rui, Cao, Zhao, Meng, Ng, arXiv 2301.06081 (``jaxden.methods.dlw``), on natural photos
(mvtb-data patches; RGB by default so that the nuclear norm across channels means something).

``--config configs/dlw.py:VARIANT``

Variants:
- ``default``: for real hardware: DLWNet depth 5 x 64, 64x64 patches, batch 10, 20k steps.
- ``quick``: the README table on 2 CPU cores.
- ``quick_gray``: ``quick`` on grayscale patches, trained through TV alone and evaluated on
  anisotropic TV too (the channel-coupling models, nuclear norm, LRTV and spectral TV, are
  degenerate on one channel).
- ``tiny``: for tests only.

Models (lower levels) by name: tv, tv_aniso, spectral_tv, nuclear, lrtv. ``dlw.sources``
trains the weight net through them; ``dlw.targets`` are only used at evaluation (transfer to
models unseen in training). Regularisation strengths ``dlw.lam.*`` are fixed, as in the
paper; the nuclear-norm strengths are per sqrt(pixel) (multiplied by sqrt(H W), the scale
of the noise's singular values).
"""

import ml_collections
from ml_collections import config_dict


def get_config(variant: str = "default") -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.method = "dlw"
    c.seed = 0

    c.data = ml_collections.ConfigDict(dict(
        train="mvtb:train",
        val="mvtb:val",
        grayscale=False,
        patch_size=64,
        patches_per_image=256,
        augment=True,
    ))
    # Training noise: one type per patch, uniformly from this list (names of
    # jaxden.noise.NOISE_TYPES, with the DLW authors' parameter ranges).
    c.noise = ml_collections.ConfigDict(dict(
        kinds=("gaussian", "impulse", "stripe", "deadline", "mixed"),
    ))
    c.model = ml_collections.ConfigDict(dict(
        name="dlwnet", depth=5, features=64, normalization="softmax",
    ))
    c.dlw = ml_collections.ConfigDict(dict(
        sources=("tv", "nuclear"),
        targets=("lrtv", "spectral_tv", "tv_aniso"),
        # Tuned for the unweighted models on 16 mvtb:val patches (40x40 RGB) with the
        # authors' per-channel Gaussian noise (sigma in [10, 70]/255), best PSNR of a grid.
        lam=ml_collections.ConfigDict(dict(
            tv=0.15, tv_aniso=0.12, spectral_tv=0.1, nuclear=0.1, lrtv_tv=0.1,
            lrtv_nuclear=0.05)),
        tol=1e-4,
        max_iter=1000,
        # Adjoint (hypergradient) solve tolerance: on 31-band weighted TV in float32 the
        # gradient error follows the forward tol (9% at 1e-4, 0.6% at 1e-5), and 1e-3 here
        # took 3-4x fewer step-VJPs than 1e-4 at the same gradient error (GMRES, then the
        # adjoint solver; with today's adjoint iteration 260 against 518 on one image).
        linear_tol=1e-3,
        # Cap on the adjoint solve's step-VJPs; None: max_iter (README, DLW: the gradient's
        # error at these settings)
        linear_max_iter=config_dict.placeholder(int),
        mode="implicit",  # implicit | unrolled (backprop through max_iter iterations)
        # unrolled mode: recompute steps from about 2 sqrt(max_iter) kept iterates in the
        # backward pass, not keep every step's intermediates (same gradient; README, DLW)
        remat=False,
        # log_mse: mean over sources and patches of log(patch MSE), each model's relative
        # error weighed alike; mse: the authors' mean over sources of the MSE, under which
        # the nuclear norm's larger errors dominated and DLW-weighted TV lost 0.8 dB to
        # unweighted TV on Gaussian noise in the quick run (log_mse: 0.2 dB; README, DLW)
        upper_loss="log_mse",
    ))
    c.batch_size = 10
    # Split each batch into this many parts, one forward/backward at a time (gradient
    # accumulation: same update, about 1/microbatches of the activation memory).
    c.microbatches = 1
    c.total_steps = 20_000
    c.optimizer = ml_collections.ConfigDict(dict(
        name="adam", learning_rate=1e-3, schedule="cosine", warmup_steps=200, end_lr=1e-6,
        grad_clip_norm=1.0,
    ))
    c.log_every_steps = 10
    c.checkpoint_every_steps = 1000
    c.eval_every_steps = 1000
    c.max_checkpoints_to_keep = 3

    c.eval = ml_collections.ConfigDict(dict(
        dataset="testimages",
        noise_types=("gaussian", "non_iid", "impulse", "stripe", "deadline", "mixed"),
        seed=1234,
        crop=128,  # centre crops (one shape: one compile); 0: full images, one at a time
        tol=1e-5,
        max_iter=2000,
        val_patches=16,
        figure_images=3,
    ))

    if variant in ("quick", "quick_gray"):
        c.data.patch_size = 40
        c.model.update(depth=4, features=32)
        c.batch_size = 8
        c.total_steps = 600
        c.optimizer.update(learning_rate=1e-3, warmup_steps=50)
        c.checkpoint_every_steps = 200
        c.eval_every_steps = 200
        if variant == "quick_gray":
            c.data.grayscale = True
            c.dlw.update(sources=("tv",), targets=("tv_aniso",))
    elif variant == "tiny":
        c.data.update(patch_size=12, patches_per_image=4)
        c.model.update(name="dlwnet_tiny", depth=3, features=4)
        c.dlw.update(sources=("tv",), targets=("nuclear",), max_iter=60, tol=1e-3)
        c.batch_size = 8
        c.total_steps = 4
        c.optimizer.update(warmup_steps=1)
        c.log_every_steps = 2
        c.checkpoint_every_steps = 2
        c.eval_every_steps = 2
        c.eval.update(crop=16, max_iter=100, tol=1e-3, val_patches=8, figure_images=1,
                      noise_types=("impulse", "mixed"))
    elif variant != "default":
        raise ValueError(f"unknown variant {variant!r}; choose default, quick, quick_gray or "
                         "tiny")
    return c
