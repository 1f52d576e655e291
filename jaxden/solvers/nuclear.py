"""Weighted nuclear-norm denoising: low rank across channels (the NUCLR model of DLW)."""

import jax

from jaxden.implicit import SolverInfo
from jaxden.solvers import _checks, _pdhg, _terms


def nuclear(
    y: jax.Array,
    lam,
    weights: jax.Array | None = None,
    *,
    tol: float = 1e-5,
    max_iter: int = 5000,
    mode: str = "implicit",
    linear_tol: float | None = None,
    linear_solver: str = "neumann",
    linear_max_iter: int | None = None,
    remat: bool = False,
) -> tuple[jax.Array, SolverInfo]:
    """x* = argmin_x 0.5 * sum(weights * (x - y)^2) + lam * ||X||_*, X = x as (H*W, C).

    The nuclear norm (sum of singular values) of the pixels-by-channels matrix favours
    images whose spectra span few dimensions (Rui et al., arXiv 2301.06081, model NUCLR).
    Chambolle-Pock (2011) with K = I: the dual step is a projection onto the spectral-norm
    ball, i.e. q - SVT_lam(q) with singular value thresholding (Cai, Candes & Shen 2010).
    Gradient safeguard: that projection is computed from the C x C Gram matrix with a
    Daleckii-Krein custom JVP (see ``jaxden.solvers._spectral``), finite for repeated and
    zero singular values where autodiff through ``svd`` returns NaN. With weights all ones
    the solution is SVT_lam(Y) in closed form. Arguments and returns as
    ``jaxden.solvers.tv``.
    """
    y = _checks.image(y)
    return _pdhg.solve(
        (_terms.nuclear_norm(),), y, _checks.weights(weights, y),
        (_checks.strength(lam, y, "lam"),),
        ratio=1.0, tol=tol, max_iter=max_iter, mode=mode, linear_tol=linear_tol,
        linear_solver=linear_solver, linear_max_iter=linear_max_iter, remat=remat,
    )
