"""Argument checks at the ``jaxden.solvers`` API boundary, with messages that name the fix."""

import jax
import jax.numpy as jnp
import numpy as np


def _concrete(value) -> np.ndarray | None:
    """The value as a NumPy array, or None under tracing (then checks are skipped)."""
    try:
        return np.asarray(value)
    except (jax.errors.TracerArrayConversionError, jax.errors.ConcretizationTypeError):
        return None


def image(y) -> jax.Array:
    y = jnp.asarray(y)
    if y.ndim not in (3, 4) or not jnp.issubdtype(y.dtype, jnp.floating):
        raise ValueError(
            "y must be a float image of shape (H, W, C) or a batch (B, H, W, C); got "
            f"{y.dtype} of shape {y.shape}. Add a channel axis for grayscale: y[..., None]."
        )
    return y


def weights(w, y: jax.Array) -> jax.Array:
    if w is None:
        return jnp.ones_like(y)
    w = jnp.asarray(w, y.dtype)
    if w.shape != y.shape:
        raise ValueError(
            f"weights must have y's shape {y.shape} (one positive weight per entry), got "
            f"{w.shape}. Broadcast it first, e.g. jnp.broadcast_to(w, y.shape)."
        )
    value = _concrete(w)
    if value is not None and not np.all(value > 0):
        raise ValueError("weights must be positive everywhere (e.g. softplus(.) + 1e-4).")
    return w


def strength(lam, y: jax.Array, name: str) -> jax.Array:
    lam = jnp.asarray(lam, y.dtype)
    allowed = ((),) if y.ndim == 3 else ((), y.shape[:1])
    if lam.shape not in allowed:
        raise ValueError(
            f"{name} must be a scalar{' or have shape (B,)' if y.ndim == 4 else ''}, got shape "
            f"{lam.shape} for y of shape {y.shape}."
        )
    value = _concrete(lam)
    if value is not None and not np.all(value > 0):
        raise ValueError(f"{name} must be > 0, got {value}. For no regularisation return y.")
    return lam

