"""Restarted GMRES (jaxden.krylov) against dense numpy solutions, in float64."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxden import krylov


@functools.partial(jax.jit, static_argnames=("tol", "restart", "max_iter"))
def _gmres(a, b, x0, tol, restart, max_iter=1000):
    return krylov.gmres(lambda v: a @ v, b, x0, tol=tol, restart=restart, max_iter=max_iter)


def _nonsymmetric(n=40, seed=0):
    """Eigenvalues in the disc of radius ~0.6 around 1: well conditioned, not normal."""
    rng = np.random.default_rng(seed)
    a = np.eye(n) + 0.6 * rng.standard_normal((n, n)) / np.sqrt(n)
    return a, rng.standard_normal(n)


def _relative_residual(a, b, x):
    return np.linalg.norm(b - a @ np.asarray(x)) / np.linalg.norm(b)


def _assert_reported(info, a, b, x):
    """info.residual is the true relative residual (to the rounding of computing it)."""
    np.testing.assert_allclose(info.residual, _relative_residual(a, b, x), rtol=1e-6, atol=1e-15)


@pytest.mark.parametrize("restart", [60, 4])
def test_matches_dense_solve(restart):
    """Restart larger than needed (one cycle) and much smaller (many cycles)."""
    with jax.enable_x64(True):
        a, b = _nonsymmetric()
        x, info = _gmres(a, b, jnp.zeros_like(b), tol=1e-12, restart=restart)
        np.testing.assert_allclose(x, np.linalg.solve(a, b), rtol=0, atol=1e-10)
        assert _relative_residual(a, b, x) <= 1e-12
        _assert_reported(info, a, b, x)
        if restart == 60:
            assert int(info.iterations) < 40  # stopped mid-cycle, before the space is full
        else:
            assert int(info.iterations) > 3 * restart


@pytest.mark.parametrize("tol", [1e-3, 1e-6, 1e-10])
def test_tolerance_is_met_and_used_to_stop(tol):
    with jax.enable_x64(True):
        a, b = _nonsymmetric(seed=1)
        x0 = np.random.default_rng(2).standard_normal(b.shape)
        x, info = _gmres(a, b, x0, tol=tol, restart=8)
        residual = _relative_residual(a, b, x)
        assert residual <= tol and float(info.residual) <= tol
        _assert_reported(info, a, b, x)
        assert residual > tol * 1e-3  # stopped near the tolerance, not far below it


def test_iterations_counted_exactly():
    """A diagonalisable matrix with 3 distinct eigenvalues: GMRES is exact after 3 steps
    (happy breakdown); a cap of 5 steps on a harder system is hit and reported."""
    with jax.enable_x64(True):
        rng = np.random.default_rng(3)
        basis = np.eye(30) + 0.1 * rng.standard_normal((30, 30))
        a = basis @ np.diag(np.resize([1.0, 2.0, 4.0], 30)) @ np.linalg.inv(basis)
        b = rng.standard_normal(30)
        x, info = _gmres(a, b, jnp.zeros(30), tol=1e-12, restart=10)
        assert int(info.iterations) == 3 and float(info.residual) <= 1e-12
        np.testing.assert_allclose(x, np.linalg.solve(a, b), atol=1e-10)

        a, b = _nonsymmetric(seed=4)
        x, info = _gmres(a, b, jnp.zeros_like(b), tol=1e-12, restart=3, max_iter=5)
        assert int(info.iterations) == 5
        residual = _relative_residual(a, b, x)
        assert 1e-12 < residual < 1
        _assert_reported(info, a, b, x)


def test_singular_consistent_system_from_b():
    """A = X diag(0 x 5, lambda) X^-1 (null space and range complementary), b in range(A).
    Every GMRES correction lies in range(A), so from x0 = b it converges to the solution
    whose null-space component (along range(A)) is b's: P_null b + A^# b, with A^# the group
    inverse X diag(0, 1 / lambda) X^-1."""
    with jax.enable_x64(True):
        rng = np.random.default_rng(5)
        n, null = 40, 5
        x_basis = np.eye(n) + 0.1 * rng.standard_normal((n, n))
        x_inv = np.linalg.inv(x_basis)
        lam = np.r_[np.zeros(null), 1 + 0.5 * rng.random(n - null)]
        a = x_basis @ np.diag(lam) @ x_inv
        b = a @ rng.standard_normal(n)
        x, info = _gmres(a, b, b, tol=1e-12, restart=6)
        assert np.all(np.isfinite(x)) and float(info.residual) <= 1e-12
        assert _relative_residual(a, b, x) <= 1e-12
        p_null = x_basis[:, :null] @ x_inv[:null]
        group_inverse = x_basis @ np.diag(np.r_[np.zeros(null), 1 / lam[null:]]) @ x_inv
        np.testing.assert_allclose(x, p_null @ b + group_inverse @ b, atol=1e-9)


def test_breakdown_on_singular_matrix_gives_no_nan():
    """Where GMRES cannot reach the tolerance it stops when a cycle makes no progress and
    returns its best iterate, with no NaN: a nilpotent A (A r0 = 0 at once, so the triangular
    factor is singular), and an inconsistent diagonal system whose least-squares residual
    is |b_0| (here 1/sqrt(3) relative)."""
    with jax.enable_x64(True):
        nilpotent = np.array([[0.0, 1.0], [0.0, 0.0]])
        x, info = _gmres(nilpotent, np.array([1.0, 0.0]), jnp.zeros(2), tol=1e-10, restart=2)
        assert np.all(np.isfinite(x)) and float(info.residual) == 1.0
        assert int(info.iterations) == 1

        a, b = np.diag([0.0, 1.0, 2.0]), np.ones(3)
        x, info = _gmres(a, b, jnp.zeros(3), tol=1e-10, restart=2)
        assert np.all(np.isfinite(x))
        np.testing.assert_allclose(info.residual, 1 / np.sqrt(3), rtol=1e-8)
        np.testing.assert_allclose(x[1:], [1.0, 0.5], atol=1e-8)


def test_zero_right_hand_side_returns_zero():
    with jax.enable_x64(True):
        a, _ = _nonsymmetric()
        x, info = _gmres(a, np.zeros(40), jnp.ones(40), tol=1e-8, restart=5)
        np.testing.assert_array_equal(x, 0.0)
        assert int(info.iterations) == 0 and float(info.residual) == 0.0


def test_vmap_matches_single_solves():
    with jax.enable_x64(True):
        systems = [_nonsymmetric(n=20, seed=s) for s in (6, 7, 8)]
        a = np.stack([s[0] for s in systems])
        b = np.stack([s[1] for s in systems])
        b[1] = 0.0  # one member stops at once, the others keep going
        solve = functools.partial(_gmres, tol=1e-11, restart=5)
        x, info = jax.vmap(lambda a, b: solve(a, b, jnp.zeros_like(b)))(a, b)
        for i in range(3):
            x_i, info_i = solve(a[i], b[i], jnp.zeros_like(b[i]))
            np.testing.assert_allclose(x[i], x_i, atol=1e-12)
            assert int(info.iterations[i]) == int(info_i.iterations)
        assert int(info.iterations[1]) == 0
