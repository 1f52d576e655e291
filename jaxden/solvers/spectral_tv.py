"""Weighted spatio-spectral (3-D) total variation, for hyperspectral stacks."""

import jax

from jaxden.implicit import SolverInfo
from jaxden.solvers import _checks, _pdhg, _terms


def spectral_tv(
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
    """x* = argmin_x 0.5 * sum(weights * (x - y)^2) + lam * TV_3D(x).

    TV_3D sums, over every entry, the norm of the forward differences along height, width
    and the channel (spectral) axis: Euclidean if ``iso`` (3-D TV), L1 otherwise (spatial
    anisotropic TV plus the band-wise TV_S of Rui et al., arXiv 2301.06081). ``boundary``
    applies to the spatial axes; the spectral axis is always replicate (Neumann). Solved by
    Chambolle-Pock (2011), ||D||^2 <= 12. Arguments and returns as ``jaxden.solvers.tv``.
    """
    y = _checks.image(y)
    term = _terms.total_variation(iso, boundary, spectral=True)
    return _pdhg.solve(
        (term,), y, _checks.weights(weights, y), (_checks.strength(lam, y, "lam"),),
        ratio=0.1, tol=tol, max_iter=max_iter, mode=mode, linear_tol=linear_tol,
        linear_solver=linear_solver, linear_max_iter=linear_max_iter, remat=remat,
    )
