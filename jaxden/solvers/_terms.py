"""The regularisers as ``_pdhg.Term``s: spatial TV, spatio-spectral TV, nuclear norm."""

import functools

from jaxden import implicit
from jaxden.solvers import _ops
from jaxden.solvers._pdhg import Term
from jaxden.solvers._spectral import project_spectral_ball


def total_variation(iso: bool, boundary: str, spectral: bool = False) -> Term:
    """TV of an (H, W, C) image: forward differences along H and W (and C if ``spectral``).

    Isotropic: sum over pixels (and channels) of the Euclidean norm of the difference vector;
    anisotropic: sum of absolute differences. Without ``spectral`` each channel is its own
    TV (norms do not mix channels). Spectral differences always use the replicate boundary
    (band order has no wrap-around). ||D||^2 <= 4 per differenced axis.
    """
    _ops.check_boundary(boundary)
    axes = (0, 1, 2) if spectral else (0, 1)
    boundaries = (boundary, boundary, "replicate")[: len(axes)]
    return Term(
        apply=lambda x: _ops.gradient(x, axes, boundaries),
        adjoint=lambda p: _ops.gradient_adjoint(p, axes, boundaries),
        project=_ops.project_l2_ball if iso else _ops.project_linf_ball,
        norm_sq=4.0 * len(axes),
        project_transpose=(_ops.project_l2_ball_transpose if iso
                           else _ops.project_linf_ball_transpose),
    )


def nuclear_norm() -> Term:
    """Nuclear norm of the (H*W, C) matrix of an image; K is the identity."""
    return Term(
        apply=lambda x: x, adjoint=lambda p: p, project=project_spectral_ball, norm_sq=1.0,
        project_transpose=functools.partial(implicit.autodiff_transpose, project_spectral_ball),
    )
