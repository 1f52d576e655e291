"""Pure variational denoisers with a per-entry weighted fidelity, differentiable implicitly.

Each solves  x* = argmin_x 0.5 * sum(weights * (x - y)^2) + lam * R(x)  for an image
(H, W, C) or a batch (B, H, W, C), by a Chambolle-Pock fixed point run in a
``lax.while_loop`` (``jaxden.implicit.fixed_point``), and returns ``(x, SolverInfo)``.
Gradients reach y, weights and every lam: implicit by default, ``mode="unrolled"`` for
backpropagation through K = max_iter iterations (the DLW reference, Rui et al.,
arXiv 2301.06081), with ``remat=True`` from about 2 sqrt(K) checkpointed iterates
(``jaxden.implicit.fixed_point``).

- ``tv``: spatial TV per channel (isotropic or anisotropic).
- ``spectral_tv``: TV with differences along the channel (band) axis too (3-D TV).
- ``nuclear``: nuclear norm of the (pixels x channels) matrix (low rank across channels).
- ``lrtv``: spatial TV + nuclear norm.
"""

from jaxden.implicit import SolverInfo
from jaxden.solvers.lrtv import lrtv
from jaxden.solvers.nuclear import nuclear
from jaxden.solvers.spectral_tv import spectral_tv
from jaxden.solvers.tv import tv

__all__ = ["SolverInfo", "lrtv", "nuclear", "spectral_tv", "tv"]
