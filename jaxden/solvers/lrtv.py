"""Weighted low-rank + total-variation denoising (LRTV)."""

import jax

from jaxden.implicit import SolverInfo
from jaxden.solvers import _checks, _pdhg, _terms


def lrtv(
    y: jax.Array,
    lam_tv,
    lam_nuc,
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
    """x* = argmin_x 0.5 * sum(weights * (x - y)^2) + lam_tv * TV(x) + lam_nuc * ||X||_*.

    Spatial TV per channel plus the nuclear norm of the (H*W, C) matrix, in the spirit of
    LRTV (He et al. 2016, "Total-variation-regularized low-rank matrix factorization for
    hyperspectral image restoration"), a DLW target model (Rui et al., arXiv 2301.06081).
    Chambolle-Pock (2011) with K = [D; I], ||K||^2 <= 9, one dual variable per term. TV
    options as ``jaxden.solvers.tv``, nuclear-norm safeguard as ``jaxden.solvers.nuclear``.
    """
    y = _checks.image(y)
    terms = (_terms.total_variation(iso, boundary), _terms.nuclear_norm())
    lams = (_checks.strength(lam_tv, y, "lam_tv"), _checks.strength(lam_nuc, y, "lam_nuc"))
    return _pdhg.solve(
        terms, y, _checks.weights(weights, y), lams,
        ratio=0.1, tol=tol, max_iter=max_iter, mode=mode, linear_tol=linear_tol,
        linear_solver=linear_solver, linear_max_iter=linear_max_iter, remat=remat,
    )
