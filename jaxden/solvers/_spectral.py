"""Projection onto the spectral-norm ball, the dual of the nuclear norm, with stable gradients.

The nuclear norm lam * ||X||_* of the (pixels x channels) matrix X has the convex conjugate
the indicator of {||Q||_2 <= lam}; projecting onto it clips the singular values at lam, which
is Q minus singular value thresholding SVT_lam(Q) (Cai, Candes & Shen 2010, "A singular
value thresholding algorithm for matrix completion"; Moreau's identity).

With Q of shape (N, C), N >= C, and the Gram matrix G = Q^T Q = V diag(s^2) V^T,

    proj(Q) = Q V diag(min(1, lam / s)) V^T = Q h(G),    h(e) = min(1, lam / sqrt(e)),

so only a C x C symmetric eigendecomposition is needed (the reference DLWnet code also works
on the Gram matrix). Safeguard for gradients: autodiff through ``svd``/``eigh`` divides by
s_i^2 - s_j^2 and returns inf/NaN for repeated or zero singular values (rank-deficient or
constant images, symmetric data). Here the matrix function h(G) has a custom JVP by the
Daleckii-Krein formula, dh(G) = V (Gamma o (V^T dG V)) V^T with the divided differences
Gamma_ij = (h(e_i) - h(e_j)) / (e_i - e_j), replaced by the mean derivative
(h'(e_i) + h'(e_j)) / 2 when |e_i - e_j| <= sqrt(machine eps) * max|e| (their limit). Gamma
is bounded by the Lipschitz constant of h, so the gradient stays finite and exact up to
O(|e_i - e_j|) on near-degenerate pairs.
"""

import jax
import jax.numpy as jnp


def _clip_factor(e: jax.Array, lam: jax.Array) -> jax.Array:
    """h(e) = min(1, lam / sqrt(e)), with finite derivatives everywhere (double where)."""
    above = e > jnp.square(lam)
    return jnp.where(above, lam / jnp.sqrt(jnp.where(above, e, 1.0)), 1.0)


def _from_eigen(h: jax.Array, v: jax.Array) -> jax.Array:
    return (v * h) @ v.T


@jax.custom_jvp
def clip_gram(gram: jax.Array, lam: jax.Array) -> jax.Array:
    """h(G) for a symmetric C x C Gram matrix G, h(e) = min(1, lam / sqrt(e))."""
    e, v = jnp.linalg.eigh(gram)
    return _from_eigen(_clip_factor(e, lam), v)


@clip_gram.defjvp
def _clip_gram_jvp(primals, tangents):
    gram, lam = primals
    d_gram, d_lam = tangents
    e, v = jnp.linalg.eigh(gram)
    h = _clip_factor(e, lam)
    dh_de = jax.vmap(jax.grad(_clip_factor, 0), (0, None))(e, lam)
    dh_dlam = jax.vmap(jax.grad(_clip_factor, 1), (0, None))(e, lam)
    gap = e[:, None] - e[None, :]
    scale = jnp.max(jnp.abs(e))
    close = jnp.abs(gap) <= jnp.sqrt(jnp.finfo(e.dtype).eps) * jnp.maximum(scale, 1e-30)
    divided = (h[:, None] - h[None, :]) / jnp.where(close, 1.0, gap)
    gamma = jnp.where(close, 0.5 * (dh_de[:, None] + dh_de[None, :]), divided)
    inner = gamma * (v.T @ d_gram @ v) + jnp.diag(dh_dlam * d_lam)
    return _from_eigen(h, v), v @ inner @ v.T


def project_spectral_ball(q: jax.Array, lam: jax.Array) -> jax.Array:
    """Project an image-shaped q (H, W, C) onto {||Q||_2 <= lam}, Q = q as (H*W, C)."""
    mat = q.reshape(-1, q.shape[-1])
    return (mat @ clip_gram(mat.T @ mat, lam)).reshape(q.shape)
