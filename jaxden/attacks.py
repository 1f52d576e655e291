"""Adversarial attacks on image classifiers: FGSM and PGD, L-inf and L2, untargeted and targeted.

A classifier is any pure ``classifier(params, x) -> logits`` (B, K) on images x (B, H, W, C)
in [0, 1]; ``params`` is an explicit argument (a pytree), so one compiled attack serves every
set of weights. ``denoise_then_classify`` makes such a classifier of a denoiser followed by a
classifier, and the attacks differentiate through both (for a Tweedie denoiser that is a
double backprop).

- FGSM (Goodfellow et al., 2015): x + eps sign(grad_x L) (L-inf), or x + eps grad / ||grad||
  (L2, the "fast gradient method").
- PGD (Madry et al., 2018): from x (or a uniform random point of the eps-ball), ``steps``
  ascent steps of size ``step_size`` on L, each projected back onto the eps-ball around x and
  onto the image box; ``restarts`` independent random starts.

L is the cross-entropy of the true label (untargeted: raised) or of the target label
(targeted: lowered). PGD returns, per sample, the first point at which the attack succeeds
(misclassified, or classified as the target): x itself, else the first iterate over restarts
and steps; otherwise the last iterate: the attack keeps the best it has found, so with the same key and step size more
steps or restarts never succeed on fewer samples. Every operation is per sample, so results
do not depend on how the batch is sharded across devices.
"""

import functools
import math
from collections.abc import Callable

import jax
import jax.numpy as jnp

Classifier = Callable[[object, jax.Array], jax.Array]
NORMS = ("linf", "l2")
_TINY = 1e-12


def _check_norm(norm: str) -> None:
    if norm not in NORMS:
        raise ValueError(f"norm={norm!r}; choose one of {NORMS}")


def _per_sample(v: jax.Array, x: jax.Array) -> jax.Array:
    """A (B,) vector broadcast against x (B, ...)."""
    return v.reshape((-1,) + (1,) * (x.ndim - 1))


def l2_norms(v: jax.Array) -> jax.Array:
    """Per-sample Euclidean norms of a batch, shape (B,)."""
    return jnp.sqrt(jnp.sum(v**2, axis=tuple(range(1, v.ndim))))


def project(delta: jax.Array, eps, norm: str) -> jax.Array:
    """The nearest point of the eps-ball (per sample) to ``delta``."""
    if norm == "linf":
        return jnp.clip(delta, -eps, eps)
    scale = jnp.minimum(1.0, eps / jnp.maximum(l2_norms(delta), _TINY))
    return delta * _per_sample(scale, delta)


def _steepest_ascent(grad: jax.Array, norm: str) -> jax.Array:
    """The unit-norm direction of steepest ascent: sign(g) (L-inf), g / ||g|| (L2)."""
    if norm == "linf":
        return jnp.sign(grad)
    return grad / _per_sample(jnp.maximum(l2_norms(grad), _TINY), grad)


def _random_start(key, x: jax.Array, eps, norm: str) -> jax.Array:
    """A uniform random point of the eps-ball, per sample."""
    if norm == "linf":
        return jax.random.uniform(key, x.shape, x.dtype, -1.0, 1.0) * eps
    key_direction, key_radius = jax.random.split(key)
    direction = jax.random.normal(key_direction, x.shape, x.dtype)
    direction = direction / _per_sample(l2_norms(direction), x)
    dim = math.prod(x.shape[1:])
    radius = eps * jax.random.uniform(key_radius, x.shape[:1], x.dtype) ** (1.0 / dim)
    return direction * _per_sample(radius, x)


def _clip(x: jax.Array, box) -> jax.Array:
    return x if box is None else jnp.clip(x, *box)


def _loss_grad_and_logits(classifier, params, x, labels, targeted):
    """grad_x of the summed objective to ascend, and the logits at x (one forward, one
    backward; per-sample because the classifier is)."""

    def objective(x):
        logits = classifier(params, x)
        log_probs = jax.nn.log_softmax(logits, axis=-1)
        chosen = jnp.take_along_axis(log_probs, labels[:, None], axis=-1)[:, 0]
        return jnp.sum(chosen if targeted else -chosen), logits

    return jax.grad(objective, has_aux=True)(x)


def succeeded(logits: jax.Array, labels: jax.Array, targeted: bool) -> jax.Array:
    """(B,) booleans: misclassified (untargeted), or classified as ``labels`` (targeted)."""
    predicted = jnp.argmax(logits, axis=-1)
    return predicted == labels if targeted else predicted != labels


@functools.partial(jax.jit, static_argnames=("classifier", "norm", "targeted", "box"))
def fgsm(classifier: Classifier, params, x: jax.Array, labels: jax.Array, eps, *,
         norm: str = "linf", targeted: bool = False, box=(0.0, 1.0)) -> jax.Array:
    """One step of size ``eps`` along the steepest ascent direction of the loss (module
    docstring). ``labels`` are the true classes (untargeted) or the targets (targeted)."""
    _check_norm(norm)
    grad, _ = _loss_grad_and_logits(classifier, params, x, labels, targeted)
    return _clip(x + eps * _steepest_ascent(grad, norm), box)


@functools.partial(jax.jit, static_argnames=(
    "classifier", "norm", "steps", "restarts", "random_start", "targeted", "box"))
def pgd(classifier: Classifier, params, x: jax.Array, labels: jax.Array, key, eps, step_size,
        *, norm: str = "linf", steps: int = 20, restarts: int = 1, random_start: bool = True,
        targeted: bool = False, box=(0.0, 1.0)) -> jax.Array:
    """Projected gradient descent (module docstring): adversarial examples, shape of x.

    Args:
      classifier: ``(params, x) -> logits``, per-sample (no batch statistics).
      params: the classifier's parameters (any pytree).
      x: clean images (B, H, W, C), inside ``box``.
      labels: (B,) true classes (untargeted) or target classes (targeted).
      key: PRNG key of the random starts (one per restart).
      eps: the budget, radius of the L-inf or L2 ball (a scalar, traced: changing it does
        not recompile).
      step_size: the length of each ascent step in ``norm`` (traced).
      norm: "linf" or "l2".
      steps: ascent steps per restart.
      restarts: independent starts; a sample counts as broken if any restart breaks it.
      random_start: start at a uniform point of the ball (else at x).
      targeted: move towards ``labels`` instead of away from them.
      box: the valid pixel range (lo, hi), or None for no clipping.
    """
    _check_norm(norm)
    if steps < 0 or restarts < 1:
        raise ValueError(f"need steps >= 0 and restarts >= 1, got {steps} and {restarts}")

    def keep_first_success(x_adv, logits, best, found):
        hit = succeeded(logits, labels, targeted) & ~found
        return jnp.where(_per_sample(hit, x), x_adv, best), found | hit

    def ascent_step(carry, _):
        x_adv, best, found = carry
        grad, logits = _loss_grad_and_logits(classifier, params, x_adv, labels, targeted)
        best, found = keep_first_success(x_adv, logits, best, found)
        delta = project(x_adv + step_size * _steepest_ascent(grad, norm) - x, eps, norm)
        return (_clip(x + delta, box), best, found), None

    def restart(carry, key):
        best, found = carry
        start = _random_start(key, x, eps, norm) if random_start else jnp.zeros_like(x)
        (x_adv, best, found), _ = jax.lax.scan(
            ascent_step, (_clip(x + start, box), best, found), None, length=steps)
        best, found = keep_first_success(x_adv, classifier(params, x_adv), best, found)
        return (jnp.where(_per_sample(found, x), best, x_adv), found), None

    found = succeeded(classifier(params, x), labels, targeted)  # x itself may already do
    (best, _), _ = jax.lax.scan(restart, (x, found), jax.random.split(key, restarts))
    return best


def denoise_then_classify(denoiser: Callable, classifier: Classifier) -> Classifier:
    """The classifier ``((denoiser_params, classifier_params), x) -> classifier(D(x))`` for
    ``denoiser(denoiser_params, x) -> D(x)``; attacks differentiate through both."""

    def pipeline(params, x):
        denoiser_params, classifier_params = params
        return classifier(classifier_params, denoiser(denoiser_params, x))

    return pipeline
