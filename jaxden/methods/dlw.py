"""DLW: a data-driven loss weighting across heterogeneous tasks (Rui, Cao, Zhao, Meng, Ng,
arXiv 2301.06081), trained bilevel with implicit differentiation.

A weight net h_theta (``jaxden.models.DLWNet``) maps a noisy image y to a positive per-pixel
weight map W = h_theta(y) for the fidelity of variational denoisers. Lower level, for each
source model t (``config.dlw.sources``):

  x_t(theta) = argmin_x 0.5 * sum(W * (y - x)^2) + lam_t * R_t(x)       (``jaxden.solvers``)

Upper level (``config.dlw.upper_loss``): "mse", min_theta mean_t mean((x_t - x_clean)^2), the
authors' 1/|sources| * MSE sum; or "log_mse", min_theta mean_t mean_n log(mse(x_t,n, x_n) +
1e-10), the mean over sources and patches of the log of each patch's MSE (minus the mean
PSNR, up to the factor 10 / ln 10). The latter weighs each model's relative error alike: with the MSE sum the
model with the largest errors dominates the gradient (nuclear norm on RGB patches: about 5x
TV's MSE), and in ``configs/dlw.py:quick`` the weights it led to made TV worse than
unweighted on Gaussian noise (README, DLW).
The hypergradient d x_t / d W comes from the implicit function theorem at the solver's fixed
point (``jaxden.implicit``; ``config.dlw.mode="implicit"``), or from backpropagation through
``max_iter`` iterations (``"unrolled"``, the authors' method; ``config.dlw.remat`` keeps
about 2 sqrt(max_iter) iterates for its backward pass instead of every step's). Noise: one
type per patch from ``config.noise.kinds`` (``jaxden.noise.sample_noise``, the authors'
parameter ranges).

Nuclear-norm strengths in the config are per sqrt(pixel): the solver gets lam * sqrt(H W),
the size of the noise's singular values for an (H W) x C matrix, so one setting serves
patches and whole images.
"""

import functools
import math

import jax
import jax.numpy as jnp
import ml_collections
from flax import nnx

from jaxden import implicit, noise, solvers
from jaxden.methods.denoise import channels, patch_sampler, patch_train_stream
from jaxden.models import build_model
from jaxden.sharding import per_device

MODELS = ("tv", "tv_aniso", "spectral_tv", "nuclear", "lrtv")
UPPER_LOSSES = ("mse", "log_mse")
LOG_MSE_FLOOR = 1e-10
WEIGHT_FLOOR = 1e-4


def check_models(names, key: str) -> tuple[str, ...]:
    names = tuple(names)
    unknown = [n for n in names if n not in MODELS]
    if not names or unknown:
        raise ValueError(f"config.dlw.{key}={names!r}: name one or more of {MODELS}")
    return names


def solve(name: str, y, weights, lam: ml_collections.ConfigDict, *, tol: float,
          max_iter: int, mode: str = "implicit", linear_tol: float | None = None,
          linear_max_iter: int | None = None, remat: bool = False):
    """(x, SolverInfo) of lower-level model ``name`` on y (B, H, W, C) with fidelity
    ``weights`` (None: all ones) and the strengths of ``lam`` (module docstring).

    Each image is its own problem (``jax.vmap``): its own stopping rule and, in implicit
    mode, its own adjoint solve; the SolverInfo fields have shape (B,). Solved as one
    problem, the batch's adjoint system is block-diagonal and one GMRES over all of it
    (then the adjoint solver) needed many more iterations than the images' own: the
    hypergradient of ``benchmarks/run.py``'s ``dlw_hypergrad`` (4 x 64 x 64, weighted TV)
    took 996 ms jointly and 369 ms per image (8 images: 674 and 628 ms; 2 cores)."""
    def one(y, weights):
        x, info = _solve_batch(name, y[None], None if weights is None else weights[None], lam,
                               tol=tol, max_iter=max_iter, mode=mode, linear_tol=linear_tol,
                               linear_max_iter=linear_max_iter, remat=remat)
        return x[0], info

    return jax.vmap(one, in_axes=(0, None if weights is None else 0))(y, weights)


def _solve_batch(name: str, y, weights, lam: ml_collections.ConfigDict, *, tol: float,
                 max_iter: int, mode: str, linear_tol: float | None,
                 linear_max_iter: int | None, remat: bool):
    kw = dict(tol=tol, max_iter=max_iter, mode=mode, linear_tol=linear_tol,
              linear_max_iter=linear_max_iter, remat=remat)
    root = math.sqrt(y.shape[-3] * y.shape[-2])
    if name == "tv":
        return solvers.tv(y, lam.tv, weights, iso=True, **kw)
    if name == "tv_aniso":
        return solvers.tv(y, lam.tv_aniso, weights, iso=False, **kw)
    if name == "spectral_tv":
        return solvers.spectral_tv(y, lam.spectral_tv, weights, **kw)
    if name == "nuclear":
        return solvers.nuclear(y, lam.nuclear * root, weights, **kw)
    if name == "lrtv":
        return solvers.lrtv(y, lam.lrtv_tv, lam.lrtv_nuclear * root, weights, **kw)
    raise ValueError(f"unknown lower-level model {name!r}; choose one of {MODELS}")


def median3x3(y: jax.Array) -> jax.Array:
    """Per-channel 3x3 median filter with replicate padding, y (B, H, W, C)."""
    padded = jnp.pad(y, ((0, 0), (1, 1), (1, 1), (0, 0)), mode="edge")
    h, w = y.shape[1:3]
    shifts = [padded[:, i:i + h, j:j + w] for i in range(3) for j in range(3)]
    return jnp.median(jnp.stack(shifts), axis=0)


def robust_weights(y: jax.Array, c: float = 3.0) -> jax.Array:
    """A hand-made weight map: Cauchy weights 1 / (1 + (r / (c s))^2) of the residual
    r = y - median3x3(y), with s the per-image, per-channel robust scale 1.4826 MAD(r);
    normalised to mean 1 per image, plus 1e-4 (as DLWNet's maps). Outliers (impulses,
    stripes, dead columns) get small weights, Gaussian noise about uniform ones."""
    r = y - median3x3(y)
    s = 1.4826 * jnp.median(jnp.abs(r), axis=(1, 2), keepdims=True)
    w = 1.0 / (1.0 + (r / jnp.maximum(c * s, 1e-6)) ** 2)
    return w / jnp.mean(w, axis=(1, 2, 3), keepdims=True) + WEIGHT_FLOOR


def check_upper_loss(name: str) -> str:
    if name not in UPPER_LOSSES:
        raise ValueError(f"config.dlw.upper_loss={name!r}: choose one of {UPPER_LOSSES}")
    return name


def check_differentiation(d: ml_collections.ConfigDict) -> None:
    """``config.dlw.mode`` and ``remat``: one clear error before the first step traces."""
    if d.mode not in implicit.MODES:
        raise ValueError(f"config.dlw.mode={d.mode!r}: choose one of {implicit.MODES}")
    if d.get("remat", False) and d.mode != "unrolled":
        raise ValueError(f"config.dlw.remat=True applies to config.dlw.mode='unrolled' only "
                         f"(mode={d.mode!r}): set --config.dlw.remat=False, or "
                         "--config.dlw.mode=unrolled")


def upper_loss(x, clean, name: str):
    """The upper-level term of one source model (module docstring): the MSE of the batch
    ("mse") or the mean over patches of log(patch MSE + 1e-10) ("log_mse"; the 1e-10, a
    PSNR of 100 dB, keeps an exactly recovered patch finite)."""
    per_patch = jnp.mean((x - clean) ** 2, axis=tuple(range(1, x.ndim)))
    if check_upper_loss(name) == "mse":
        return jnp.mean(per_patch)
    return jnp.mean(jnp.log(per_patch + LOG_MSE_FLOOR))


def bilevel_loss(weight_net, clean, noisy, config: ml_collections.ConfigDict):
    """(upper-level loss, metrics) for a batch: W = weight_net(noisy), each source model
    solved with W, mean over sources of ``upper_loss`` (``config.dlw.upper_loss``)."""
    d = config.dlw
    weights = weight_net(noisy)
    total, out = 0.0, {"weight_min": jnp.min(weights), "weight_max": jnp.max(weights)}
    for name in d.sources:
        x, info = per_device(functools.partial(solve, name, lam=d.lam, tol=d.tol,
                                               max_iter=d.max_iter, mode=d.mode,
                                               linear_tol=d.linear_tol,
                                               # None (runs saved before the key): max_iter
                                               linear_max_iter=d.get("linear_max_iter"),
                                               remat=d.get("remat", False)),
                             noisy, weights)
        term = upper_loss(x, clean, d.upper_loss)
        out[f"loss_{name}"] = term
        out[f"train_psnr_{name}"] = -10.0 * jnp.log10(jnp.mean((jnp.clip(x, 0, 1) - clean) ** 2))
        out[f"residual_{name}"] = jnp.max(info.residual)
        out[f"iterations_{name}"] = jnp.max(info.iterations).astype(jnp.float32)
        total = total + term
    return total / len(d.sources), out


class DLW:
    name = "dlw"

    def build_model(self, config):
        return build_model(config.model, in_channels=channels(config),
                           rngs=nnx.Rngs(config.seed))

    def train_data(self, config, process_index, process_count):
        return patch_train_stream(config, process_index, process_count)

    def make_loss(self, config):
        check_models(config.dlw.sources, "sources")
        check_models(config.dlw.targets, "targets")
        check_upper_loss(config.dlw.upper_loss)
        check_differentiation(config.dlw)
        kinds = tuple(config.noise.kinds)
        noise.sample_noise(jax.random.key(0), jnp.zeros((1, 8, 8, channels(config))), kinds)

        def loss_fn(model, batch, key):
            clean = batch["image"]
            return bilevel_loss(model, clean, noise.sample_noise(key, clean, kinds), config)

        return loss_fn

    def make_validate(self, config):
        """PSNR of each source model on fixed noisy patches of held-out scenes, weighted by
        the net and unweighted (the latter once: it does not change)."""
        if not config.data.get("val"):
            return None
        d, n = config.dlw, config.eval.val_patches
        clean = jnp.asarray(patch_sampler(config, config.data.val, max(1, n // 4),
                                           config.seed + 1, False).batch(0, n))
        noisy = noise.sample_noise(jax.random.key(config.eval.seed), clean,
                                   tuple(config.noise.kinds))

        def psnr(x):
            return float(-10.0 * jnp.log10(jnp.mean((jnp.clip(x, 0, 1) - clean) ** 2)))

        solve_jit = jax.jit(lambda name, w: solve(name, noisy, w, d.lam, tol=d.tol,
                                                  max_iter=d.max_iter)[0],
                            static_argnums=0)
        unweighted = {f"val_psnr_{m}_unweighted": psnr(solve_jit(m, None)) for m in d.sources}

        def validate(model):
            graphdef, state = nnx.split(model)
            weights = jax.jit(lambda s: nnx.merge(graphdef, s)(noisy))(state)
            return {**unweighted, **{f"val_psnr_{m}": psnr(solve_jit(m, weights))
                                     for m in d.sources}}

        return validate

    def evaluate(self, model, config, workdir: str, step: int) -> str:
        from jaxden.methods.dlw_eval import evaluate_dlw

        return evaluate_dlw(model, config, workdir, step)
