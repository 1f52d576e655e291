"""Weighted total-variation denoising (Rudin, Osher & Fatemi 1992; the TV model of DLW)."""

import jax

from jaxden.implicit import SolverInfo
from jaxden.solvers import _checks, _pdhg, _terms


def tv(
    y: jax.Array,
    lam,
    weights: jax.Array | None = None,
    *,
    iso: bool = True,
    boundary: str = "replicate",
    tol: float = 1e-5,
    max_iter: int = 5000,
    mode: str = "implicit",
    linear_tol: float | None = None,
    linear_solver: str = "neumann",
    linear_max_iter: int | None = None,
    remat: bool = False,
) -> tuple[jax.Array, SolverInfo]:
    """x* = argmin_x 0.5 * sum(weights * (x - y)^2) + lam * TV(x), TV per channel.

    The lower-level model of Rui et al. (arXiv 2301.06081, eq. for X_t(theta) with R = TV),
    solved by Chambolle-Pock (2011) to a fixed point and differentiated implicitly.

    Args:
      y: (H, W, C) image or (B, H, W, C) batch; each image is its own problem.
      lam: regularisation strength > 0, scalar or (B,).
      weights: positive per-entry fidelity weights of y's shape (the DLW weight map W, which
        multiplies the squared residual); None means all ones.
      iso: isotropic TV (sum over pixels and channels of sqrt(dx^2 + dy^2)) or anisotropic
        (sum of |dx| + |dy|).
      boundary: ``"replicate"`` (Neumann; last forward difference is zero, as Chambolle 2004
        and scikit-image) or ``"periodic"`` (as the DLWnet code's ``torch.roll``).
      tol, max_iter: stop at relative fixed-point residual <= tol or after max_iter steps;
        in ``mode="unrolled"`` exactly max_iter steps.
      mode: ``"implicit"`` (implicit-function-theorem gradient) or ``"unrolled"``.
      linear_tol: relative tolerance of the adjoint linear solve (default: tol).
      linear_solver: its method, ``jaxden.implicit.fixed_point``'s ``linear_solver``.
      linear_max_iter: its cap on step-VJPs (default: max_iter).
      remat: unrolled mode: recompute steps from about 2 sqrt(max_iter) kept iterates in the
        backward pass instead of keeping every step's intermediates (same gradient).

    Returns:
      (x, SolverInfo(residual, iterations)); info fields have shape (B,) for a batch.

    With ``weights=None`` and ``iso=True`` this is the problem of
    ``skimage.restoration.denoise_tv_chambolle(y, weight=lam, channel_axis=-1)``.
    """
    y = _checks.image(y)
    term = _terms.total_variation(iso, boundary)
    return _pdhg.solve(
        (term,), y, _checks.weights(weights, y), (_checks.strength(lam, y, "lam"),),
        ratio=0.1, tol=tol, max_iter=max_iter, mode=mode, linear_tol=linear_tol,
        linear_solver=linear_solver, linear_max_iter=linear_max_iter, remat=remat,
    )
