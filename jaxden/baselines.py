"""Classical denoisers measured beside the learned ones in every table.

- TV: Chambolle's total-variation denoiser (scikit-image ``denoise_tv_chambolle``), i.e.
  argmin_x 0.5 * ||x - y||^2 + weight * TV(x), with ``weight`` tuned per noise level on held-out
  images (``tune_tv_weight``), so that the baseline is not handicapped by a bad guess.
- BM3D: Dabov et al. 2007, PyPI ``bm3d`` (Makinen et al.'s reference implementation), given the
  true noise standard deviation.
Inputs are float images (H, W, C) on the [0, 1] scale; outputs are clipped to [0, 1].
"""

import bm3d as bm3d_lib
import numpy as np
from skimage.restoration import denoise_tv_chambolle

TV_WEIGHT_GRID = tuple(np.geomspace(0.01, 0.6, 15))


def tv(noisy: np.ndarray, weight: float) -> np.ndarray:
    out = denoise_tv_chambolle(noisy, weight=weight, channel_axis=-1)
    return np.clip(out, 0.0, 1.0).astype(np.float32)


def bm3d(noisy: np.ndarray, sigma: float) -> np.ndarray:
    """BM3D with known sigma (on the [0, 1] scale); colour images use CBM3D (``bm3d_rgb``)."""
    if noisy.shape[-1] == 3:
        out = bm3d_lib.bm3d_rgb(noisy, sigma)
    else:
        out = bm3d_lib.bm3d(noisy[..., 0], sigma)[..., None]
    return np.clip(out, 0.0, 1.0).astype(np.float32)


def tune_tv_weight(pairs: list[tuple[np.ndarray, np.ndarray]], psnr) -> float:
    """The grid weight with the best mean PSNR over (clean, noisy) held-out pairs."""
    scores = [np.mean([float(psnr(tv(y, w), x)) for x, y in pairs]) for w in TV_WEIGHT_GRID]
    return float(TV_WEIGHT_GRID[int(np.argmax(scores))])
