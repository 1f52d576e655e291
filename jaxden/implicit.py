"""Fixed-point solves differentiated implicitly (or by unrolling, for reference).

A solver iteration ``z_next = step(z, params)`` with a fixed point z* = step(z*, params)
defines z*(params). By the implicit function theorem (see e.g. Blondel et al. 2022,
"Efficient and modular implicit differentiation", NeurIPS; Bai, Kolter & Koltun 2019,
"Deep equilibrium models"), where I - d step/dz is invertible at z*,

    dz*/dparams = (I - d step/dz)^{-1} d step/dparams,

so a vector-Jacobian product with a cotangent g on z* is

    solve (I - d step/dz)^T u = g,    then    g_params = (d step/dparams)^T u.

Both products are vector-Jacobian products of ``step`` at z*, so the backward pass costs one
linear solve of step-VJPs and stores only z* and params: memory does not grow with the number
of forward iterations, and the gradient is exact at convergence (its error follows the
forward residual and the linear-solve tolerance).

The default linear solver is the adjoint fixed-point iteration u <- (d step/dz)^T u + g
(Christianson 1994, "Reverse accumulation and attractive fixed points", Optim. Methods
Softw. 3:311-326): it converges wherever the forward iteration converges linearly, at the
forward's rate (same spectrum), costs one step-VJP per iteration and keeps one vector.

``mode="unrolled"`` runs exactly ``max_iter`` steps in a ``lax.scan`` and lets autodiff
backpropagate through every one (the hypergradient of Rui et al., arXiv 2301.06081, and of
the authors' DLWnet code); its memory grows linearly with ``max_iter``. With ``remat=True``
it keeps only every c-th iterate, c about sqrt(max_iter), and recomputes the steps between
them in the backward pass (two-level checkpointing: Griewank 1992, "Achieving logarithmic
growth of temporal and spatial complexity in reverse automatic differentiation"; Chen et al.
2016, "Training deep nets with sublinear memory cost"): the same gradient from O(sqrt K)
iterates instead of K steps' intermediates.

Rule: ``params`` must hold everything a gradient has to reach (data, weights, regularisation
strengths). ``step`` must not close over traced differentiable values: the custom VJP below
cannot see them (JAX raises an error for closed-over tracers under differentiation).
"""

import sys
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree
from jax.scipy.sparse.linalg import bicgstab

from jaxden.krylov import gmres

PyTree = Any
Step = Callable[[PyTree, PyTree], PyTree]
# (step, z, params) -> (u -> (d step/dz)^T u at z): a hand-written linearisation's transpose
Transpose = Callable[[Step, PyTree, PyTree], Callable[[PyTree], PyTree]]

MODES = ("implicit", "unrolled")
LINEAR_SOLVERS = ("gmres", "bicgstab", "neumann")


class SolverInfo(NamedTuple):
    """Convergence report of a fixed-point solve.

    residual: relative fixed-point residual ||step(z) - z|| / ||z|| of the returned iterate's
      last step (Euclidean norm over the whole pytree).
    iterations: number of ``step`` applications made.
    """

    residual: jax.Array
    iterations: jax.Array


class _Config(NamedTuple):
    tol: float
    max_iter: int
    linear_solver: str
    linear_tol: float
    linear_max_iter: int
    check_every: int
    restart: int


def _tree_norm(z: PyTree) -> jax.Array:
    return jnp.sqrt(sum(jnp.sum(jnp.square(leaf)) for leaf in jax.tree.leaves(z)))


def _relative_change(z_next: PyTree, z: PyTree) -> jax.Array:
    diff = _tree_norm(jax.tree.map(jnp.subtract, z_next, z))
    scale = _tree_norm(z_next)
    return diff / jnp.maximum(scale, jnp.finfo(diff.dtype).tiny)


def _iterate(step: Step, z0: PyTree, params: PyTree, tol: float, max_iter: int,
             check_every: int):
    """Forward: iterate until the relative residual is <= tol, or max_iter steps.

    The residual (two norms over the whole iterate) is computed on every ``check_every``-th
    step only: on CPU it costs several times a cheap step such as TV's. The loop may thus run
    up to ``check_every - 1`` steps past the first step that met ``tol``, never past max_iter.
    """

    def cond(carry):
        _, residual, k = carry
        return (residual > tol) & (k < max_iter)

    def body(carry):
        z, _, k = carry
        n = jnp.minimum(check_every, max_iter - k)
        z = jax.lax.fori_loop(0, n - 1, lambda _, z: step(z, params), z)
        z_next = step(z, params)
        return z_next, _relative_change(z_next, z), k + n

    dtype = jnp.result_type(*jax.tree.leaves(z0))
    init = (z0, jnp.asarray(jnp.inf, dtype), jnp.asarray(0, jnp.int32))
    z, residual, k = jax.lax.while_loop(cond, body, init)
    return z, SolverInfo(residual, k)


def _unrolled(step: Step, z0: PyTree, params: PyTree, num_iter: int, remat: bool):
    """Exactly num_iter steps, differentiated by reverse-mode autodiff through the scan."""
    if num_iter < 1:
        raise ValueError(f"mode='unrolled' needs max_iter >= 1, got {num_iter}.")
    z_before = (_checkpointed_steps if remat else _steps)(step, z0, params, num_iter - 1)
    z = step(z_before, params)
    residual = jax.lax.stop_gradient(_relative_change(z, z_before))
    return z, SolverInfo(residual, jnp.asarray(num_iter, jnp.int32))


def _steps(step: Step, z: PyTree, params: PyTree, n: int) -> PyTree:
    """n steps in a ``lax.scan``; autodiff keeps every step's intermediates."""
    return jax.lax.scan(lambda z, _: (step(z, params), None), z, length=n)[0]


def _checkpointed_steps(step: Step, z: PyTree, params: PyTree, n: int) -> PyTree:
    """``_steps`` whose backward pass holds about 2 sqrt(n) iterates: an outer scan over
    segments of c = round(sqrt(n)) steps keeps each segment's first iterate; the backward
    pass recomputes a segment, keeping its c iterates, then each step's intermediates one
    step at a time (``jax.checkpoint``). The forward steps run about three times.

    On 64x64 weighted TV in float64 (2 cores, one-off script) against ``_steps``: K = 100 /
    500 / 2000 steps forward + backward took 56.6 / 288 / 1137 ms against 76.2 / 384 /
    1605 ms (less memory to write and read back outweighs the recomputation), in 2.41 / 4.72
    / 8.94 MB of XLA temporaries against 37.9 / 188 / 750 MB; keeping each step's iterate
    only (one level) took 54.1 / 265 / 1095 ms in 9.84 / 47.3 / 188 MB.
    """
    segment = max(1, round(n ** 0.5))
    segments, rest = divmod(n, segment)

    @jax.checkpoint
    def one_step(z, _):
        return step(z, params), None

    @jax.checkpoint
    def one_segment(z, _):
        return jax.lax.scan(one_step, z, length=segment)[0], None

    z = jax.lax.scan(one_segment, z, length=segments)[0]
    return jax.lax.scan(one_step, z, length=rest)[0]


def autodiff_transpose(step: Step, z: PyTree, params: PyTree):
    """u -> (d step/dz)^T u at z by autodiff (``fixed_point``'s default ``transpose``; any
    f(z, params) works), linearised afresh at every call: XLA:CPU ran
    the Krylov loop 2.5x slower on 64x64 weighted TV (and 1.1x slower on 2x64x64x31) when it
    carried the residuals of one linearisation as loop invariants."""
    return lambda u: jax.vjp(lambda z: step(z, params), z)[1](u)[0]


def _adjoint_solve(step: Step, z: PyTree, params: PyTree, g: PyTree, cfg: _Config,
                   transpose: Transpose | None):
    """u = (I - d step/dz)^T^{-1} g at z, then (d step/dparams)^T u."""
    operator_t = (autodiff_transpose if transpose is None else transpose)(step, z, params)
    if cfg.linear_solver == "neumann":
        u, residual, iterations = _neumann(operator_t, g, cfg)
        _warn_if_unconverged(residual, iterations, cfg)
        return jax.vjp(step, z, params)[1](u)[1]
    g_flat, unravel = ravel_pytree(g)

    def operator(u_flat):  # I - (d step/dz)^T on flat vectors
        return u_flat - ravel_pytree(operator_t(unravel(u_flat)))[0]

    if cfg.linear_solver == "gmres":
        u_flat, info = gmres(operator, g_flat, g_flat, tol=cfg.linear_tol, restart=cfg.restart,
                             max_iter=cfg.linear_max_iter)
        _warn_if_unconverged(info.residual, info.iterations, cfg)
    else:
        u_flat, _ = bicgstab(operator, g_flat, x0=g_flat, tol=cfg.linear_tol,
                             maxiter=cfg.linear_max_iter)
        # JAX's BiCGSTAB reports neither residual nor count: one more product measures it.
        residual = jnp.linalg.norm(operator(u_flat) - g_flat)
        _warn_if_unconverged(_relative(residual, jnp.linalg.norm(g_flat)), None, cfg)
    return jax.vjp(step, z, params)[1](unravel(u_flat))[1]


def _neumann(operator_t, g: PyTree, cfg: _Config):
    """Solve (I - J^T) u = g, J = d step/dz at z*, by u_{k+1} = J^T u_k + g from u_0 = g.

    u_k = sum_{i <= k} (J^T)^i g; the residual of u_k is g - (I - J^T) u_k = u_{k+1} - u_k,
    checked every ``check_every`` iterations against ``linear_tol * ||g||`` (as GMRES's).
    On a singular but consistent system (the eigenvalue 1 of J semisimple, as for the
    averaged Chambolle-Pock map) the null-space component of u_k stays g's, so the series
    still converges; ``tests/test_implicit.py`` checks it on anisotropic TV, whose dual
    solution is not unique. The iterates stay pytrees of z's structure: flattening them
    into one vector at every iteration made a 64x64 weighted-TV iteration 1.4x slower on
    XLA:CPU (32.5 against 23.6 µs, one-off script).
    """
    g_norm = _tree_norm(g)

    def iteration(u):
        return jax.tree.map(jnp.add, operator_t(u), g)

    def cond(carry):
        _, residual, k = carry
        return (residual > cfg.linear_tol * g_norm) & (k < cfg.linear_max_iter)

    def body(carry):
        u, _, k = carry
        n = jnp.minimum(cfg.check_every, cfg.linear_max_iter - k)
        u = jax.lax.fori_loop(0, n - 1, lambda _, u: iteration(u), u)
        u_next = iteration(u)
        return u_next, _tree_norm(jax.tree.map(jnp.subtract, u_next, u)), k + n

    init = (g, jnp.asarray(jnp.inf, g_norm.dtype), jnp.asarray(1, jnp.int32))
    u, residual, iterations = jax.lax.while_loop(cond, body, init)
    return u, _relative(residual, g_norm), iterations


def _relative(residual, g_norm):
    """An adjoint residual norm relative to ||g|| (0 for g = 0, where u = 0 solves exactly)."""
    return jnp.where(g_norm > 0, residual / g_norm, 0.0)


_WARNED = set()  # (solver, linear_tol, linear_max_iter) settings already reported


def _warn_if_unconverged(relative_residual, iterations, cfg: _Config):
    """A warning on stderr, once per process and setting, where an adjoint solve stopped
    above ``linear_tol`` (at ``linear_max_iter``, or broken down: a NaN residual counts): its
    hypergradient is then inexact, which nothing else would show (the forward ``SolverInfo``
    is returned before the backward pass runs). ``iterations`` is None where the solver does
    not count them (BiCGSTAB). A host callback, so it works under jit and vmap (batched
    values); a print, not ``warnings.warn``, which raises where warnings are errors, and an
    exception in a callback aborts XLA's process."""
    key = (cfg.linear_solver, cfg.linear_tol, cfg.linear_max_iter)

    def report(residual, iterations=None):
        residual = np.asarray(residual)
        if key in _WARNED or np.all(residual <= cfg.linear_tol):
            return
        _WARNED.add(key)
        worst = float(np.max(residual))  # NaN if any is
        count = "" if iterations is None else f"after {int(np.max(iterations))} step-VJPs "
        print(
            f"warning: jaxden.implicit: an adjoint solve ({cfg.linear_solver}) stopped at relative "
            f"residual {worst:.1e} > linear_tol={cfg.linear_tol:g} {count}"
            f"(linear_max_iter={cfg.linear_max_iter}), so its hypergradient is inexact: raise "
            "linear_max_iter (or loosen linear_tol). Later ones with these settings are not "
            "reported.", file=sys.stderr, flush=True)

    if iterations is None:
        jax.debug.callback(report, relative_residual)
    else:
        jax.debug.callback(report, relative_residual, iterations)


def _implicit_solver(step: Step, cfg: _Config, transpose: Transpose | None):
    @jax.custom_vjp
    def solve(z0, params):
        return _iterate(step, z0, params, cfg.tol, cfg.max_iter, cfg.check_every)

    def fwd(z0, params):
        z, info = solve(z0, params)
        return (z, info), (z, params)

    def bwd(res, cotangents):
        z, params = res
        g_z, _ = cotangents  # the info outputs (residual, count) carry no gradient
        g_params = _adjoint_solve(step, z, params, g_z, cfg, transpose)
        return jax.tree.map(jnp.zeros_like, z), g_params

    solve.defvjp(fwd, bwd)
    return solve


def fixed_point(
    step: Step,
    z0: PyTree,
    params: PyTree,
    *,
    tol: float = 1e-5,
    max_iter: int = 1000,
    mode: str = "implicit",
    linear_solver: str = "neumann",
    linear_tol: float | None = None,
    linear_max_iter: int | None = None,
    linear_restart: int = 20,
    check_every: int = 10,
    transpose: Transpose | None = None,
    remat: bool = False,
) -> tuple[PyTree, SolverInfo]:
    """Fixed point z* = step(z*, params), differentiable in ``params``.

    Args:
      step: one solver iteration ``step(z, params) -> z_next``, pure, same pytree structure
        and dtypes for z and z_next. It must be a stationary map (no iteration-dependent step
        sizes) so that its fixed point is the solution.
      z0: starting point (a pytree of arrays). In implicit mode its gradient is zero (the
        fixed point does not depend on it); unrolled mode returns autodiff's gradient.
      params: pytree holding every value a gradient must reach.
      tol: forward stop when ||step(z) - z|| / ||step(z)|| <= tol (implicit mode only).
      max_iter: forward iteration cap (implicit mode); exact iteration count K (unrolled).
      mode: ``"implicit"`` (custom VJP by the implicit function theorem, memory independent
        of the iteration count) or ``"unrolled"`` (autodiff through K = max_iter steps).
      linear_solver: method for the non-symmetric adjoint system (I - d step/dz)^T u = g:
        ``"neumann"`` (the adjoint fixed-point iteration, module docstring), ``"gmres"``
        (``jaxden.krylov.gmres``, restarted every ``linear_restart`` iterations, Gram-Schmidt
        reorthogonalised) or ``"bicgstab"`` (``jax.scipy.sparse.linalg.bicgstab``).
        Measured (``benchmarks/hypergradient.py --problems 1``, 64x64 weighted TV, float64,
        ``jaxden.solvers``' hand-written ``transpose``; 2 cores): forward + gradient at tol
        1e-5 / 1e-6 / 1e-7 (adjoint tol 100 x tol) took 8.6 / 16.6 / 47.9 ms with the
        Neumann iteration, 15.2 / 30.4 / 83.1 ms with GMRES, whose basis of
        ``linear_restart`` + 1 vectors raised XLA's temporary memory from 0.75 to 4.52 MB.
        On one 31-band 64x64 image to adjoint tol 1e-3 (with autodiff's step-VJPs) the
        Neumann iteration took 260 step-VJPs (187 ms), GMRES 113 iterations (498 ms): its
        basis products dominate at that size.
        GMRES may need fewer products where the forward iteration converges slowly.
        Where the dual solution is not unique (e.g. anisotropic TV on flat regions) the
        system is singular; the Neumann iteration and GMRES (started from g) gave the
        finite-difference gradient there, while BiCGSTAB returned wrong gradients (off by
        2x to 300x on the seed-2 anisotropic-TV problem of ``tests/test_implicit.py``) and
        NaN at tol 1e-8 on isotropic TV; use it only where the dual is unique.
      linear_tol: relative residual tolerance ||A u - g|| <= linear_tol * ||g|| of the
        adjoint solve; defaults to ``tol``.
      linear_max_iter: cap on the adjoint solve's step-VJPs (matrix-vector products);
        defaults to ``max_iter``. An adjoint solve that ends above ``linear_tol`` prints a
        warning, once per process and setting (BiCGSTAB's residual costs one more product).
      linear_restart: GMRES restart length: the Krylov basis holds this many vectors of z's
        size, the backward pass's main temporary memory.
      check_every: compute the forward residual every this many steps; the iteration count
        is then a multiple of it, or max_iter.
      transpose: ``transpose(step, z, params)`` returns the map u -> (d step/dz)^T u at z,
        e.g. one written by hand whose linearisation is computed once (``jaxden.solvers``'
        Chambolle-Pock step); it must equal autodiff's. None (default): autodiff's
        vector-Jacobian product of ``step``, linearised afresh at each product.
      remat: unrolled mode only: keep about 2 sqrt(max_iter) iterates for the backward pass
        and recompute the steps between them (module docstring; ``_checkpointed_steps``),
        not every step's intermediates. The same gradient, in less memory and, for cheap
        steps such as the solvers' on CPU, less time too.

    Returns:
      (z_star, SolverInfo(residual, iterations)).

    Only first derivatives are supported in implicit mode (the backward pass is not itself
    differentiable). The gradient is exact only at a fixed point: check ``info.residual``.
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}.")
    if linear_solver not in LINEAR_SOLVERS:
        raise ValueError(f"linear_solver must be one of {LINEAR_SOLVERS}, got {linear_solver!r}.")
    if check_every < 1:
        raise ValueError(f"check_every must be >= 1, got {check_every}.")
    if linear_restart < 1:
        raise ValueError(f"linear_restart must be >= 1, got {linear_restart}.")
    if tol <= 0 or max_iter < 1:
        raise ValueError(f"Need tol > 0 and max_iter >= 1, got tol={tol}, max_iter={max_iter}.")
    if remat and mode != "unrolled":
        raise ValueError(f"remat=True applies to mode='unrolled' only, got mode={mode!r} "
                         "(implicit mode keeps no iterates for its backward pass).")
    if mode == "unrolled":
        return _unrolled(step, z0, params, max_iter, bool(remat))
    cfg = _Config(
        tol=float(tol),
        max_iter=int(max_iter),
        linear_solver=linear_solver,
        linear_tol=float(tol if linear_tol is None else linear_tol),
        linear_max_iter=int(max_iter if linear_max_iter is None else linear_max_iter),
        check_every=int(check_every),
        restart=int(linear_restart),
    )
    return _implicit_solver(step, cfg, transpose)(z0, params)
