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


def gradient(x: jax.Array, axes: tuple[int, ...], boundaries: tuple[str, ...]) -> jax.Array:
    """Stacked forward differences, shape (len(axes),) + x.shape."""
    return jnp.stack([diff(x, a, b) for a, b in zip(axes, boundaries)])


def gradient_adjoint(
    p: jax.Array, axes: tuple[int, ...], boundaries: tuple[str, ...]
) -> jax.Array:
    """Adjoint of ``gradient`` (minus the divergence)."""
    return sum(diff_adjoint(p[i], a, b) for i, (a, b) in enumerate(zip(axes, boundaries)))


def project_l2_ball(p: jax.Array, radius: jax.Array) -> jax.Array:
    """Project each vector p[:, i] onto {|q|_2 <= radius}: dual of the isotropic TV norm.

    The norm uses a double ``where`` so that its gradient is finite at p = 0.
    """
    sq = jnp.sum(jnp.square(p), axis=0, keepdims=True)
    positive = sq > 0
    norm = jnp.where(positive, jnp.sqrt(jnp.where(positive, sq, 1.0)), 0.0)
    return p / jnp.maximum(1.0, norm / radius)


def project_linf_ball(p: jax.Array, radius: jax.Array) -> jax.Array:
    """Clip each entry to [-radius, radius]: dual of the anisotropic (L1) TV norm."""
    return jnp.clip(p, -radius, radius)
