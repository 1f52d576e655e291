"""Implicit differentiation: closed-form toy problems, finite differences, long unrolling."""

import functools
import re

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxden import implicit, solvers

# One tiny problem per solver: (solve(y, weights, lams, **options), lams).
SOLVERS = {
    "tv_iso": (lambda y, w, lams, **kw: solvers.tv(y, lams[0], w, **kw), (0.05,)),
    "tv_aniso": (lambda y, w, lams, **kw: solvers.tv(y, lams[0], w, iso=False, **kw), (0.05,)),
    "spectral_tv": (lambda y, w, lams, **kw: solvers.spectral_tv(y, lams[0], w, **kw), (0.05,)),
    "nuclear": (lambda y, w, lams, **kw: solvers.nuclear(y, lams[0], w, **kw), (0.3,)),
    "lrtv": (lambda y, w, lams, **kw: solvers.lrtv(y, lams[0], lams[1], w, **kw), (0.05, 0.3)),
}
TOL = 1e-12


def _problem(seed=0, shape=(6, 5, 3)):
    rng = np.random.default_rng(seed)
    ramp = np.linspace(0, 1, shape[0])[:, None, None] * np.array([1.0, 0.8, 0.5])
    y = ramp + 0.1 * rng.standard_normal(shape)
    w = np.exp(0.3 * rng.standard_normal(shape))
    c = rng.standard_normal(shape)
    return y, w, c


@functools.cache
def _loss_and_grad(name, mode, max_iter):
    """Jitted (loss, grads) of loss = sum(c * x*(y, w, lams)), shared across tests."""
    solve = SOLVERS[name][0]

    def loss(y, w, lams, c):
        x, info = solve(y, w, lams, tol=TOL, max_iter=max_iter, mode=mode, linear_tol=1e-13)
        return jnp.sum(c * x), info

    return jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2), has_aux=True))


@pytest.mark.parametrize("name", list(SOLVERS))
def test_implicit_gradient_matches_central_differences(name):
    with jax.enable_x64(True):
        y, w, c = _problem()
        lams = tuple(jnp.float64(v) for v in SOLVERS[name][1])
        fn = _loss_and_grad(name, "implicit", 20000)
        (_, info), grads = fn(y, w, lams, c)
        assert float(info.residual) <= TOL and int(info.iterations) < 20000
        rng = np.random.default_rng(1)
        h = 1e-5
        errors = {}
        for arg in range(3):
            direction = [np.zeros_like(y), np.zeros_like(w), np.zeros(len(lams))]
            direction[arg] = rng.standard_normal(direction[arg].shape)

            def shifted(s, direction=direction):
                new_lams = tuple(v + s * d for v, d in zip(lams, direction[2]))
                return fn(y + s * direction[0], w + s * direction[1], new_lams, c)[0][0]

            fd = (shifted(h) - shifted(-h)) / (2 * h)
            ad = sum(jnp.vdot(g, jnp.asarray(d)) for g, d in
                     zip((grads[0], grads[1], jnp.stack(grads[2])), direction))
            errors[arg] = float(abs(ad - fd) / max(abs(fd), 1e-8))
        print(name, "relative FD error (y, weights, lams):", errors)
        assert max(errors.values()) < 1e-5, errors


@pytest.mark.parametrize("name", list(SOLVERS))
def test_implicit_matches_long_unrolling(name):
    with jax.enable_x64(True):
        y, w, c = _problem(seed=2)
        lams = tuple(jnp.float64(v) for v in SOLVERS[name][1])
        (_, info), g_implicit = _loss_and_grad(name, "implicit", 20000)(y, w, lams, c)
        (_, info_u), g_unrolled = _loss_and_grad(name, "unrolled", 4000)(y, w, lams, c)
        assert int(info_u.iterations) == 4000
        print(name, "implicit iterations", int(info.iterations), "unrolled residual",
              float(info_u.residual))
        chex.assert_trees_all_close(g_implicit, g_unrolled, atol=1e-8, rtol=1e-7)


@pytest.mark.parametrize("name,num_iter", [("tv_iso", 1), ("tv_iso", 2), ("tv_iso", 40),
                                           ("lrtv", 40)])
def test_remat_unrolling_gives_the_same_gradient(name, num_iter):
    """``remat=True`` recomputes steps from checkpointed iterates: the same gradients (in y,
    which reaches the first iterate too, the weights and the strengths) for K = 1, 2 and
    40 = 6 segments of 6 steps + 3 + the last one."""
    with jax.enable_x64(True):
        y, w, c = _problem(seed=4)
        lams = tuple(jnp.float64(v) for v in SOLVERS[name][1])

        def grads(remat):
            def loss(y, w, lams):
                x, _ = SOLVERS[name][0](y, w, lams, max_iter=num_iter, mode="unrolled",
                                        remat=remat)
                return jnp.sum(c * x)

            return jax.jit(jax.grad(loss, argnums=(0, 1, 2)))(y, w, lams)

        plain = grads(False)
        assert float(jnp.linalg.norm(plain[1])) > 0
        chex.assert_trees_all_close(grads(True), plain, atol=1e-13, rtol=1e-11)


def test_remat_unrolling_keeps_about_sqrt_k_iterates():
    """XLA's temporary memory for the gradient of 400 unrolled weighted-TV steps on 32x32:
    every step's intermediates without remat (more than 400 iterates' worth), about
    2 sqrt(400) = 40 iterates' worth with it (compiled only, not run)."""
    with jax.enable_x64(True):
        y = jnp.zeros((32, 32, 1))
        iterate = 3 * y.size * 8  # x and two dual arrays, float64

        def temp(remat):
            def loss(y):
                return jnp.sum(solvers.tv(y, 0.1, max_iter=400, mode="unrolled",
                                          remat=remat)[0])

            return jax.jit(jax.grad(loss)).lower(y).compile().memory_analysis() \
                .temp_size_in_bytes / iterate

        plain, remat = temp(False), temp(True)
        print(f"temporaries in iterates: {plain:.0f} plain, {remat:.0f} with remat")
        assert plain > 400 and remat < 80


@pytest.mark.parametrize("name", ["tv_iso", "tv_aniso"])
def test_adjoint_solvers_agree(name):
    """The default Neumann adjoint iteration and GMRES give the same gradient, also on the
    singular adjoint system of anisotropic TV (non-unique dual solution)."""
    with jax.enable_x64(True):
        y, w, c = _problem(seed=2)
        lams = tuple(jnp.float64(v) for v in SOLVERS[name][1])
        solve = SOLVERS[name][0]

        def grads(linear_solver):
            def loss(y, w, lams):
                x, _ = solve(y, w, lams, tol=TOL, max_iter=20000, linear_tol=1e-13,
                             linear_solver=linear_solver)
                return jnp.sum(c * x)

            return jax.jit(jax.grad(loss, argnums=(0, 1, 2)))(y, w, lams)

        chex.assert_trees_all_close(grads("neumann"), grads("gmres"), atol=1e-9, rtol=1e-8)


def _contraction_step(z, params):
    return params["a"] @ z + params["b"]


@pytest.mark.parametrize("linear_solver", implicit.LINEAR_SOLVERS)
@pytest.mark.parametrize("check_every", [1, 7])
def test_linear_contraction_is_exact(linear_solver, check_every):
    """z* = (I - A)^{-1} b; d/db of c.z* = (I - A)^{-T} c, d/dA = outer((I - A)^{-T} c, z*)."""
    with jax.enable_x64(True):
        rng = np.random.default_rng(0)
        a = rng.standard_normal((5, 5))
        a *= 0.7 / np.linalg.norm(a, 2)
        b, c = rng.standard_normal(5), rng.standard_normal(5)

        def loss(params):
            z, info = implicit.fixed_point(
                _contraction_step, jnp.zeros(5), params, tol=1e-14, max_iter=500,
                linear_tol=1e-14, linear_solver=linear_solver, check_every=check_every,
            )
            return jnp.dot(c, z), (z, info)

        grads, (z, info) = jax.jit(jax.grad(loss, has_aux=True))({"a": a, "b": b})
        z_exact = np.linalg.solve(np.eye(5) - a, b)
        u = np.linalg.solve((np.eye(5) - a).T, c)
        np.testing.assert_allclose(z, z_exact, atol=1e-12)
        np.testing.assert_allclose(grads["b"], u, atol=1e-10)
        np.testing.assert_allclose(grads["a"], np.outer(u, z_exact), atol=1e-10)
        assert float(info.residual) <= 1e-14 and 0 < int(info.iterations) < 500
        assert int(info.iterations) % check_every == 0


@pytest.mark.parametrize("linear_solver,cap", [("neumann", 3), ("gmres", 3), ("bicgstab", 1)])
def test_unconverged_adjoint_solve_warns_once(linear_solver, cap, monkeypatch, capfd):
    """An adjoint solve capped by linear_max_iter above linear_tol prints a warning (under
    jit and vmap), once per setting; a converged one does not. BiCGSTAB (two products per
    iteration, exact on this 5-dim system within 5) is capped at one iteration; it reports
    no iteration count."""
    monkeypatch.setattr(implicit, "_WARNED", set())
    rng = np.random.default_rng(1)
    a = rng.standard_normal((5, 5))
    a = jnp.asarray(a * 0.9 / np.linalg.norm(a, 2), jnp.float32)
    bs = jnp.asarray(rng.standard_normal((3, 5)), jnp.float32)

    def stderr_of_grads(linear_max_iter):
        def loss(b):
            z, _ = implicit.fixed_point(_contraction_step, jnp.zeros(5), {"a": a, "b": b},
                                        tol=1e-6, max_iter=500, linear_tol=1e-6,
                                        linear_max_iter=linear_max_iter,
                                        linear_solver=linear_solver, linear_restart=2)
            return jnp.sum(z)

        capfd.readouterr()
        jax.block_until_ready(jax.jit(jax.vmap(jax.grad(loss)))(bs))
        jax.effects_barrier()
        return capfd.readouterr().err

    assert "warning" not in stderr_of_grads(500)
    err = stderr_of_grads(cap)
    count = "" if linear_solver == "bicgstab" else r"after \d+ step-VJPs "
    assert re.search(rf"warning: jaxden.implicit: an adjoint solve \({linear_solver}\) stopped "
                     rf"at relative residual .* > linear_tol=1e-06 {count}"
                     rf"\(linear_max_iter={cap}\).*raise linear_max_iter", err), err
    assert "warning" not in stderr_of_grads(cap)  # reported once


def test_ridge_regression_gradient_wrt_regulariser():
    """Gradient descent on ridge: z* = (X^T X + alpha I)^{-1} X^T t; closed-form d/dalpha."""
    with jax.enable_x64(True):
        rng = np.random.default_rng(3)
        x, t = rng.standard_normal((8, 4)), rng.standard_normal(8)
        eta = 1.0 / (np.linalg.norm(x, 2) ** 2 + 1.0)

        def step(z, params):
            return z - eta * (x.T @ (x @ z - params["t"]) + params["alpha"] * z)

        def loss(alpha, mode):
            z, _ = implicit.fixed_point(
                step, jnp.zeros(4), {"alpha": alpha, "t": t}, tol=1e-14, max_iter=5000,
                mode=mode, linear_solver="bicgstab", linear_tol=1e-14,
            )
            return jnp.sum(z**2)

        alpha = 0.5
        hessian = x.T @ x + alpha * np.eye(4)
        z_star = np.linalg.solve(hessian, x.T @ t)
        exact = -2 * z_star @ np.linalg.solve(hessian, z_star)  # d|z|^2/dalpha
        g = jax.jit(jax.grad(functools.partial(loss, mode="implicit")))(alpha)
        assert abs(float(g) - exact) < 1e-10
        g_unrolled = jax.jit(jax.grad(functools.partial(loss, mode="unrolled")))(alpha)
        assert abs(float(g_unrolled) - exact) < 1e-8


def test_initial_point_gets_zero_gradient_and_bad_arguments_raise():
    params = {"a": 0.5 * jnp.eye(2), "b": jnp.ones(2)}

    def loss(z0):
        return jnp.sum(implicit.fixed_point(_contraction_step, z0, params, tol=1e-6)[0])

    np.testing.assert_array_equal(jax.grad(loss)(jnp.ones(2)), 0.0)
    with pytest.raises(ValueError, match="mode"):
        implicit.fixed_point(_contraction_step, jnp.ones(2), params, mode="adjoint")
    with pytest.raises(ValueError, match="linear_solver"):
        implicit.fixed_point(_contraction_step, jnp.ones(2), params, linear_solver="cg")
    with pytest.raises(ValueError, match="remat=True applies to mode='unrolled' only"):
        implicit.fixed_point(_contraction_step, jnp.ones(2), params, remat=True)
