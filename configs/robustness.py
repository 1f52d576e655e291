"""Robustness evaluation (issue 5): ``eval.py --workdir RUN --robustness configs/robustness.py:VARIANT``.

Evaluates RUN and the runs in ``baselines`` (comma-separated workdirs) on the same test images;
see ``jaxden.robustness``. Budgets on [0, 1] images: L-inf in units of 1/255, L2 as is.

Variants:
- ``quick``: the README table; the first 500 test images, PGD-20, one restart.
- ``default``: the whole test split, PGD-50, two restarts.
- ``tiny``: for tests only.
"""

import ml_collections


def get_config(variant: str = "quick") -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.baselines = "runs/cdn/clean_classifier,runs/cdn/classifier,runs/mtl/mtl_s0"
    c.max_examples = 500
    c.batch_size = 250
    c.linf = (1, 2, 4, 8)  # x 1/255
    c.l2 = (0.1, 0.25, 0.5, 1.0)
    c.fgsm_linf = 8  # x 1/255; 0: no FGSM column
    c.steps = 20
    c.step_size = 2.5  # PGD step = step_size * eps / steps (Madry et al.)
    c.restarts = 1
    c.seed = 0
    c.sigma = 0.0  # the noise level (0-255) an energy classifier is told
    c.pipeline_sigma = 25.0  # denoise at this sigma, then classify; 0: no pipeline row
    c.identity_images = 4  # test images for the denoiser-difference identity; 0: skip
    c.identity_sigma = 25.0
    c.out_dir = ""  # "": WORKDIR/eval/robustness
    if variant == "default":
        c.max_examples = None
        c.steps = 50
        c.restarts = 2
    elif variant == "tiny":
        c.baselines = ""
        c.max_examples = 16
        c.batch_size = 8
        c.linf = (8,)
        c.l2 = (0.5,)
        c.steps = 2
        c.identity_images = 2
    elif variant != "quick":
        raise ValueError(f"unknown variant {variant!r}; choose quick, default or tiny")
    return c
