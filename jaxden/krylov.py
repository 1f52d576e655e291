"""Restarted GMRES for flat vectors, lean enough for operators as cheap as a few dot products.

GMRES(m) (Saad & Schultz 1986, "GMRES: a generalized minimal residual algorithm for solving
nonsymmetric linear systems", SIAM J. Sci. Stat. Comput. 7(3):856-869): each cycle builds an
orthonormal basis v_0..v_k of the Krylov space K_{k+1}(A, r) of the residual r = b - A x by
Arnoldi, and moves x to the minimiser of ||b - A x|| over x + K_{k+1}; after m steps (or once
the residual is small enough) it restarts from the new x.

What differs from ``jax.scipy.sparse.linalg.gmres`` (JAX 0.10.2, ``solve_method="batched"``):

* Orthogonalisation is classical Gram-Schmidt applied twice (CGS2, "twice is enough"), each
  pass two matrix-vector products against the basis, whose rows not yet built are zero (no
  mask needed). jax.scipy's ``_iterative_classical_gram_schmidt(max_iterations=2)`` never
  runs its second pass (its loop test ``k < max_iterations - 1`` fails after the first): it is
  single CGS, whose loss of orthogonality grows like the square of the condition number
  (Giraud, Langou, Rozloznik & van den Eshof 2005, Numer. Math. 101:87-100).
* The basis is row-major ((rows, n); jax.scipy's (n, m + 1) is read and written by strided
  columns) and grows in ``_PHASES`` steps, each phase its own while loop over a basis of fixed
  size, so that the products run over about the rows built so far instead of all m + 1 (a
  slice of a larger basis would be copied: XLA:CPU fuses no slice into a dot).
* The least-squares problem is kept in QR form by Givens rotations, accumulated in a small
  orthogonal matrix (no loop over the rotations), which gives the residual norm after every
  step: a cycle stops as soon as it is below tolerance. The batched jax.scipy variant always
  builds all m vectors, then solves the normal equations H^T H y = H^T beta.
* ``max_iter`` caps Arnoldi steps (matrix-vector products), not cycles; the result reports the
  steps made and the true residual.
* A cycle that does not reduce the true residual (stagnation: a restart from the same point
  would repeat it) ends the solve, which returns the best iterate; jax.scipy runs on to
  ``maxiter``.

Cost on XLA:CPU, one core, 64x64 weighted TV in ``jaxden.implicit`` (n = 12288, float64,
restart 20): a product against one basis row takes ~1.5 us (memory-bound, ~65 GB/s), so an
iteration takes ~0.125 ms (CGS2 over ~13.5 rows on average, plus ~0.025 ms for the operator),
jax.scipy's ~0.14 ms (one pass over all 21 rows).

Tolerance as jax.scipy with ``atol=0``: stop when ||b - A x|| <= tol * ||b||, the true residual
recomputed with one extra matrix-vector product at the end of every cycle (a cycle that stopped
on the rotated estimate but fails this check is followed by another).

Breakdown: when A v_k lies (to rounding, ||w|| <= eps ||A v_k||) in the span of the basis,
the Krylov space is invariant and the cycle ends. If A is singular on it, the last diagonal
entry of the triangular factor vanishes; that column is then dropped (coefficient 0), which
still gives a least-squares minimiser, so nothing divides by zero. On a singular but
consistent system every correction lies in K(A, r_0), inside range(A): started from x0,
GMRES converges (where range(A) and null(A) intersect only at 0, Brown & Walker 1997, SIAM J.
Matrix Anal. Appl. 18:37-51) to the solution whose null(A) component, along range(A), is
x0's, not to the minimum-norm one. For b = 0 it returns x = 0 (exact) whatever x0.
"""

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp


class GmresInfo(NamedTuple):
    """iterations: Arnoldi steps made (matrix-vector products, not counting the one per cycle
    that recomputes the true residual). residual: true relative residual ||b - A x|| / ||b||
    of the returned x (0 when b = 0)."""

    iterations: jax.Array
    residual: jax.Array


def _givens(a, b):
    """(c, s, r) with [[c, s], [-s, c]] @ [a, b] = [r, 0], r = hypot(a, b); identity if r = 0."""
    r = jnp.hypot(a, b)
    safe = jnp.where(r > 0, r, 1)
    return jnp.where(r > 0, a / safe, 1), jnp.where(r > 0, b / safe, 0), r


_PHASES = 4  # 4 saved a quarter of the time per iteration of 1 (no growth) at restart 20


class _Arnoldi(NamedTuple):
    """State of a cycle after k Arnoldi steps."""

    k: jax.Array  # steps made
    used: jax.Array  # columns of the triangular factor in use (k, or k - 1 after a breakdown)
    v: jax.Array  # the newest basis vector, row k of basis (kept apart: reading a row of
    # basis at a dynamic index slowed the matrix-vector product 2x on XLA:CPU)
    basis: jax.Array  # (rows, n), rows <= m + 1: orthonormal rows 0..k, zero below
    rotations: jax.Array  # (m + 1, m + 1) Q, product of the Givens rotations so far
    triangle: jax.Array  # (m, m) R, Q H = [R; 0]; identity in the columns not yet built
    estimate: jax.Array  # residual norm of the least-squares solution over the k steps
    breakdown: jax.Array  # the Krylov space became invariant (to rounding)


def _cycle(matvec, x, r, r_norm, target, m, steps):
    """One GMRES cycle of at most ``steps`` (<= m) Arnoldi steps from x with residual r.

    Returns the new x and the number of steps made.
    """
    dtype = r.dtype
    eps = jnp.finfo(dtype).eps
    rows = jnp.arange(m)

    def body(s: _Arnoldi):
        k = s.k
        w = matvec(s.v)
        w_norm = jnp.linalg.norm(w)
        h = s.basis @ w  # CGS2: project out the basis twice; rows > k are zero
        w = w - h @ s.basis
        h2 = s.basis @ w
        w = w - h2 @ s.basis
        h = jnp.pad(h + h2, (0, m + 1 - s.basis.shape[0]))
        sub = jnp.linalg.norm(w)  # H[k + 1, k]
        breakdown = sub <= eps * w_norm
        sub = jnp.where(breakdown, 0, sub)
        v = w / jnp.where(breakdown, 1, sub)
        column = s.rotations @ h.at[k + 1].set(sub)  # rows k + 1 on of Q are still identity
        c, sn, diagonal = _givens(column[k], sub)
        row_k, row_next = s.rotations[k], s.rotations[k + 1]
        rotations = s.rotations.at[k].set(c * row_k + sn * row_next)
        rotations = rotations.at[k + 1].set(c * row_next - sn * row_k)
        column = jnp.where(rows < k, column[:m], jnp.where(rows == k, diagonal, 0))
        # Only a breakdown can make the diagonal (numerically) zero: then drop column k
        # (coefficient 0, identity column in R); the cycle ends there.
        keep = diagonal > eps * w_norm
        return _Arnoldi(
            k=k + 1,
            used=jnp.where(keep, k + 1, k),
            v=v,
            basis=s.basis.at[k + 1].set(v),
            rotations=rotations,
            triangle=s.triangle.at[:, k].set(jnp.where(keep, column, rows == k)),
            estimate=r_norm * jnp.abs(rotations[k + 1, 0]),
            breakdown=breakdown,
        )

    v = r / jnp.where(r_norm > 0, r_norm, 1)
    zero = jnp.asarray(0, jnp.int32)
    s = _Arnoldi(
        k=zero, used=zero, v=v, basis=v[None], rotations=jnp.eye(m + 1, dtype=dtype),
        triangle=jnp.eye(m, dtype=dtype), estimate=r_norm, breakdown=jnp.asarray(False),
    )
    # The basis grows in _PHASES steps of ~m / _PHASES rows (see the module docstring).
    for end in sorted({-(-m * (i + 1) // _PHASES) for i in range(_PHASES)}):
        s = s._replace(basis=jnp.pad(s.basis, ((0, end + 1 - s.basis.shape[0]), (0, 0))))
        s = jax.lax.while_loop(
            lambda s, end=end: (s.k < jnp.minimum(steps, end)) & (s.estimate > target)
            & ~s.breakdown,
            body, s,
        )
    rhs = jnp.where(rows < s.used, r_norm * s.rotations[:m, 0], 0)
    y = jax.scipy.linalg.solve_triangular(s.triangle, rhs, lower=False)
    return x + y @ s.basis[:m], s.k


def gmres(
    matvec: Callable[[jax.Array], jax.Array],
    b: jax.Array,
    x0: jax.Array,
    *,
    tol: float,
    restart: int,
    max_iter: int,
) -> tuple[jax.Array, GmresInfo]:
    """Solve A x = b by restarted GMRES(restart) from x0 (see the module docstring).

    Args:
      matvec: x -> A x on 1-D arrays of b's shape and dtype; A need not be symmetric or
        invertible (a singular system must be consistent for the tolerance to be reachable).
      b, x0: 1-D right-hand side and starting point.
      tol: stop when ||b - A x|| <= tol * ||b||.
      restart: Krylov basis size m; the basis takes (m + 1) * b.size entries of memory.
      max_iter: cap on Arnoldi steps (matrix-vector products) over all cycles.

    Returns:
      (x, GmresInfo(iterations, residual)). Not converged if ``info.residual > tol``.

    jit-able and vmap-able (under vmap a batch runs until every member has stopped).
    """
    if b.ndim != 1 or x0.shape != b.shape:
        raise ValueError(f"b and x0 must be 1-D of one shape, got {b.shape} and {x0.shape}.")
    if restart < 1 or max_iter < 0:
        raise ValueError(f"Need restart >= 1 and max_iter >= 0, got {restart}, {max_iter}.")
    m = min(restart, b.shape[0])
    b_norm = jnp.linalg.norm(b)
    target = tol * b_norm
    x0 = jnp.where(b_norm > 0, x0, 0)
    r0 = b - matvec(x0)

    def cond(carry):
        _, _, r_norm, iterations, stalled = carry
        return (r_norm > target) & (iterations < max_iter) & ~stalled

    def body(carry):
        x, r, r_norm, iterations, _ = carry
        steps = jnp.minimum(m, max_iter - iterations)
        x_new, k = _cycle(matvec, x, r, r_norm, target, m, steps)
        r_new = b - matvec(x_new)
        r_new_norm = jnp.linalg.norm(r_new)
        better = r_new_norm < r_norm
        x, r, r_norm = jax.tree.map(
            lambda new, old: jnp.where(better, new, old), (x_new, r_new, r_new_norm),
            (x, r, r_norm))
        return x, r, r_norm, iterations + k, ~better

    init = (x0, r0, jnp.linalg.norm(r0), jnp.asarray(0, jnp.int32), jnp.asarray(False))
    x, _, r_norm, iterations, _ = jax.lax.while_loop(cond, body, init)
    residual = jnp.where(b_norm > 0, r_norm / jnp.where(b_norm > 0, b_norm, 1), 0)
    return x, GmresInfo(iterations, residual)
