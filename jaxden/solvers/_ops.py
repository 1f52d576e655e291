"""Forward differences, their adjoints, and projections onto dual-norm balls.

Forward differences (Dx)_i = x_{i+1} - x_i along one axis, with either boundary:
- ``"replicate"`` (Neumann, as Chambolle 2004 and scikit-image): the last difference is 0;
- ``"periodic"``: x_n = x_0 (as ``torch.roll`` in Rui et al.'s DLWnet code).
The adjoint D^T is minus a backward-difference divergence, so <Dx, p> = <x, D^T p>.
"""

import jax
import jax.numpy as jnp

BOUNDARIES = ("replicate", "periodic")


def check_boundary(boundary: str) -> None:
    if boundary not in BOUNDARIES:
        raise ValueError(f"boundary must be one of {BOUNDARIES}, got {boundary!r}.")


def diff(x: jax.Array, axis: int, boundary: str) -> jax.Array:
    """Forward difference along ``axis``, same shape as x."""
    if boundary == "periodic":
        return jnp.roll(x, -1, axis) - x
    d = jnp.diff(x, axis=axis)
    pad = [(0, 0)] * x.ndim
    pad[axis] = (0, 1)
    return jnp.pad(d, pad)


def diff_adjoint(p: jax.Array, axis: int, boundary: str) -> jax.Array:
    """Adjoint of ``diff``: (D^T p)_j = p_{j-1} - p_j (the entry p_{n-1} is unused if
    ``replicate``)."""
    if boundary == "periodic":
        return jnp.roll(p, 1, axis) - p
    n = p.shape[axis]
    inner = jax.lax.slice_in_dim(p, 0, n - 1, axis=axis)
    pad_front = [(0, 0)] * p.ndim
    pad_front[axis] = (1, 0)
    pad_back = [(0, 0)] * p.ndim
    pad_back[axis] = (0, 1)
    return jnp.pad(inner, pad_front) - jnp.pad(inner, pad_back)


def gradient(
    x: jax.Array, axes: tuple[int, ...], boundaries: tuple[str, ...]
) -> tuple[jax.Array, ...]:
    """Forward differences along each axis, one array of x's shape per axis.

    A tuple rather than one stacked array: on XLA:CPU the stacked layout (and its transpose in
    the adjoint's step-VJPs) made the weighted-TV step about 4x slower on 256x256 images and
    its VJP 2-4x slower (``benchmarks/hypergradient.py`` setting).
    """
    return tuple(diff(x, a, b) for a, b in zip(axes, boundaries))


def gradient_adjoint(
    p: tuple[jax.Array, ...], axes: tuple[int, ...], boundaries: tuple[str, ...]
) -> jax.Array:
    """Adjoint of ``gradient`` (minus the divergence)."""
    return sum(diff_adjoint(pi, a, b) for pi, a, b in zip(p, axes, boundaries))


def project_l2_ball(p: tuple[jax.Array, ...], radius: jax.Array) -> tuple[jax.Array, ...]:
    """Project each vector (p[0][i], p[1][i], ...) onto {|q|_2 <= radius}: dual of the
    isotropic TV norm.

    The norm is floored at the smallest normal number so that its gradient is finite at
    p = 0 (where the projection is the identity, so the floor changes no value).
    """
    sq = sum(jnp.square(pi) for pi in p)
    norm = jnp.sqrt(jnp.maximum(sq, jnp.finfo(sq.dtype).tiny))
    scale = radius / jnp.maximum(radius, norm)
    return tuple(pi * scale for pi in p)


def project_linf_ball(p: tuple[jax.Array, ...], radius: jax.Array) -> tuple[jax.Array, ...]:
    """Clip each entry to [-radius, radius]: dual of the anisotropic (L1) TV norm."""
    return tuple(jnp.clip(pi, -radius, radius) for pi in p)


def _tie_weight(a: jax.Array, b: jax.Array) -> jax.Array:
    """d max(a, b) / da as JAX's autodiff takes it: 1 where a > b, 1/2 at a tie, 0 else."""
    return jnp.where(a > b, 1.0, jnp.where(a == b, 0.5, 0.0)).astype(a.dtype)


def project_l2_ball_transpose(q: tuple[jax.Array, ...], radius: jax.Array):
    """u -> J^T u, J the Jacobian of ``project_l2_ball`` at q (as autodiff's, ties included).

    With m = max(radius, |q|) and s = radius / m, J u = s u - c q (q . u) per vector, where
    c = t radius / (m^2 |q|) and t = d max(radius, |q|) / d|q| (1 outside the ball, 0 inside):
    J is symmetric, so J^T = J. Computed once as s and a = sqrt(c) q, then J^T u = s u -
    a (a . u): no square root or division per product.
    """
    sq = sum(jnp.square(qi) for qi in q)
    norm = jnp.sqrt(jnp.maximum(sq, jnp.finfo(sq.dtype).tiny))
    m = jnp.maximum(radius, norm)
    scale = radius / m
    t = _tie_weight(norm, radius)
    root_c = jnp.where(t > 0, jnp.sqrt(t * radius / (m * m * norm)), 0.0)  # no 0 * inf
    a = tuple(root_c * qi for qi in q)

    def apply(u):
        dot = sum(ai * ui for ai, ui in zip(a, u))
        return tuple(scale * ui - ai * dot for ai, ui in zip(a, u))

    return apply


def project_linf_ball_transpose(q: tuple[jax.Array, ...], radius: jax.Array):
    """u -> J^T u, J the (diagonal) Jacobian of ``project_linf_ball`` at q, as autodiff's:
    clip = min(radius, max(-radius, q)), so 1 inside, 1/2 on the boundary, 0 outside."""
    masks = tuple(_tie_weight(qi, -radius) * _tie_weight(radius, jnp.maximum(-radius, qi))
                  for qi in q)
    return lambda u: tuple(mi * ui for mi, ui in zip(masks, u))
