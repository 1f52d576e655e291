"""Classification and denoising from one network's per-class log-joint scores.

Thiry & Guth, "Classification-Denoising Networks" (arXiv 2410.03505): a network outputs
f_c(y) = log p(y, c) + const for a noisy image y = x + sigma * eps, eps ~ N(0, I), and one
class c in {0, ..., K-1}. Everything else follows by Bayes and by differentiation in y:

- classification, log p(c | y) = log_softmax_c f(y);
- marginal log density, log p(y) = logsumexp_c f_c(y) + const;
- marginal denoiser (Tweedie-Miyasawa), E[x | y] = y + sigma^2 grad_y logsumexp_c f_c(y);
- class-conditional denoiser, E[x | y, c] = y + sigma^2 grad_y f_c(y).

``log_joint`` is any callable mapping a batch y of shape (B, H, W, C) to scores of shape
(B, K): a closure over an NNX model, or a plain function. It must be per-sample: row b of
``log_joint(y)`` depends on y[b] only (no batch statistics, e.g. no BatchNorm in training
mode). Then grad_y sum_b g(f(y)[b]) has y[b]'s own gradient in row b, and one backward pass
of the batch sum gives every sample's score, with no per-sample Jacobian.

All functions are pure and jittable, work under ``jax.vmap`` and on batches sharded along
the leading axis, and are differentiable again (a loss on ``denoise`` can be differentiated
in the network's parameters: double backpropagation).
"""

from collections.abc import Callable

import chex
import jax
import jax.numpy as jnp

LogJoint = Callable[[jax.Array], jax.Array]


def _log_joint_checked(log_joint: LogJoint, y: jax.Array) -> jax.Array:
    f = log_joint(y)
    chex.assert_rank(f, 2)
    chex.assert_axis_dimension(f, 0, y.shape[0])
    return f


def _check_label(label, batch: int) -> jax.Array:
    label = jnp.asarray(label)
    if label.shape != (batch,) or not jnp.issubdtype(label.dtype, jnp.integer):
        raise ValueError(
            f"label must be an integer array of shape (B,) = ({batch},), got "
            f"{label.dtype} of shape {label.shape}."
        )
    return label


def _check_sigma(sigma, y: jax.Array) -> jax.Array:
    sigma = jnp.asarray(sigma, y.dtype)
    if sigma.shape not in ((), y.shape[:1]):
        raise ValueError(
            f"sigma must be a scalar or have shape (B,) = {y.shape[:1]} (one per image), "
            f"got shape {sigma.shape} for y of shape {y.shape}."
        )
    return sigma[..., None, None, None]


def classify(log_joint: LogJoint, y: jax.Array) -> jax.Array:
    """Class log-posteriors log p(c | y) = log_softmax_c f_c(y), shape (B, K).

    Thiry & Guth (arXiv 2410.03505): the scores are log p(y, c) up to a constant shared by
    the classes, so Bayes' rule is a softmax over the class axis.
    """
    chex.assert_rank(y, 4)
    return jax.nn.log_softmax(_log_joint_checked(log_joint, y), axis=-1)


def score(log_joint: LogJoint, y: jax.Array, label=None) -> tuple[jax.Array, jax.Array]:
    """Scores grad_y log p(y) (``label=None``) or grad_y log p(y, c) (``label`` given).

    Thiry & Guth (arXiv 2410.03505): log p(y) = logsumexp_c f_c(y) + const and
    log p(y, c) = f_c(y) + const, so the constants drop out of the gradients. One forward
    and one backward pass (``jax.value_and_grad`` of the batch sum), which is exact because
    ``log_joint`` is per-sample (see the module docstring).

    Args:
      log_joint: maps y (B, H, W, C) to log-joint scores (B, K), per-sample.
      y: noisy images, float, shape (B, H, W, C).
      label: None for the marginal score, or integer classes of shape (B,) for the
        class-conditional one. Classes in [0, K); a class >= K gives NaN, a negative one
        counts from the end (as in numpy).

    Returns:
      (grad, f): the scores, shape and dtype of y, and the forward log-joint scores
      ``log_joint(y)`` of shape (B, K), from the same forward pass (e.g. for ``classify``
      without recomputing them).

    Raises:
      ValueError: if label is not an integer array of shape (B,).
    """
    y = jnp.asarray(y)
    chex.assert_rank(y, 4)
    chex.assert_type(y, float)
    if label is not None:
        label = _check_label(label, y.shape[0])

    def objective(y):
        f = _log_joint_checked(log_joint, y)
        if label is None:
            per_sample = jax.nn.logsumexp(f, axis=-1)
        else:
            per_sample = jnp.take_along_axis(f, label[:, None], axis=-1)[:, 0]
        return jnp.sum(per_sample), f

    (_, f), grad = jax.value_and_grad(objective, has_aux=True)(y)
    return grad, f


def denoise_and_classify(
    log_joint: LogJoint, y: jax.Array, sigma, label=None
) -> tuple[jax.Array, jax.Array]:
    """Tweedie-Miyasawa denoiser and class log-posteriors from one forward-backward pass.

    D(y) = y + sigma^2 grad_y logsumexp_c f_c(y) = E[x | y] (``label=None``), or
    D(y, c) = y + sigma^2 grad_y f_c(y) = E[x | y, c] (``label`` given); Thiry & Guth
    (arXiv 2410.03505), Tweedie's formula for y = x + sigma * eps. Differentiable again
    in whatever ``log_joint`` closes over (double backpropagation).

    Args:
      log_joint: maps y (B, H, W, C) to log-joint scores (B, K), per-sample.
      y: noisy images, float, shape (B, H, W, C).
      sigma: the noise level of y, a scalar or one per image, shape (B,), broadcast over
        H, W and C. It only scales the score: ``log_joint`` must already model y at this
        level.
      label: None, or integer classes of shape (B,); see ``score``.

    Returns:
      (D, log_probs): the denoised images, shape of y, and log p(c | y), shape (B, K).

    Raises:
      ValueError: if sigma is neither a scalar nor of shape (B,), or label is not an
        integer array of shape (B,).
    """
    y = jnp.asarray(y)
    chex.assert_rank(y, 4)
    sigma = _check_sigma(sigma, y)
    grad, f = score(log_joint, y, label)
    return y + sigma**2 * grad, jax.nn.log_softmax(f, axis=-1)


def denoise(log_joint: LogJoint, y: jax.Array, sigma, label=None) -> jax.Array:
    """Tweedie-Miyasawa denoiser D(y) = E[x | y], or D(y, c) = E[x | y, c] given ``label``.

    The first output of ``denoise_and_classify``; see it for the arguments. Thiry & Guth
    (arXiv 2410.03505).
    """
    return denoise_and_classify(log_joint, y, sigma, label)[0]
