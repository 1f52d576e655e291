"""The hand-written adjoint of the Chambolle-Pock step (``_pdhg._make_transpose``) and of
the dual-ball projections, against autodiff's vector-Jacobian products (float64)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxden.solvers import _ops, _pdhg, _terms

TERMS = {
    "tv_iso": ((_terms.total_variation(True, "replicate"),), (0.05,)),
    "tv_iso_periodic": ((_terms.total_variation(True, "periodic"),), (0.05,)),
    "tv_aniso": ((_terms.total_variation(False, "replicate"),), (0.05,)),
    "spectral_tv": ((_terms.total_variation(True, "replicate", spectral=True),), (0.05,)),
    "nuclear": ((_terms.nuclear_norm(),), (0.3,)),
    "lrtv": ((_terms.total_variation(True, "replicate"), _terms.nuclear_norm()), (0.05, 0.3)),
}


def _tree(rng, like, scale):
    return jax.tree.map(lambda a: scale * jnp.asarray(rng.standard_normal(a.shape)), like)


@pytest.mark.parametrize("name", list(TERMS))
def test_transpose_equals_autodiff_step_vjp(name):
    terms, lams = TERMS[name]
    with jax.enable_x64(True):
        rng = np.random.default_rng(0)
        shape = (7, 6, 3)
        y = jnp.asarray(0.5 + 0.01 * rng.standard_normal(shape))  # small differences
        params = {"y": y, "weights": jnp.asarray(np.exp(0.5 * rng.standard_normal(shape))),
                  "lams": tuple(jnp.float64(v) for v in lams)}
        # duals of the size of lam, so that both sides of every ball's boundary occur
        duals = tuple(_tree(rng, t.apply(y), lam) for t, lam in zip(terms, lams))
        z = (y + 0.01 * jnp.asarray(rng.standard_normal(shape)), duals)
        step = _pdhg._make_step(terms, 0.1)
        transpose = jax.jit(lambda z, params, u: _pdhg._make_transpose(terms, 0.1)(
            step, z, params)(u))
        autodiff = jax.jit(lambda z, params, u: jax.vjp(lambda z: step(z, params), z)[1](u)[0])
        _, qs = _pdhg._primal_dual_update(terms, *_pdhg._step_sizes(terms, 0.1), z, params)
        if name.startswith(("tv", "spectral")):
            norms = jnp.sqrt(sum(jnp.square(qi) for qi in qs[0]))
            if name == "tv_aniso":
                norms = jnp.abs(qs[0][0])
            assert jnp.any(norms > lams[0]) and jnp.any(norms < lams[0])
        for seed in range(3):
            u = _tree(np.random.default_rng(seed + 1), z, 1.0)
            got, want = transpose(z, params, u), autodiff(z, params, u)
            for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
                np.testing.assert_allclose(g, w, rtol=1e-12, atol=1e-13)


def test_projection_transposes_match_autodiff_at_ties():
    """Entries exactly on a ball's boundary, where autodiff splits max's derivative in two,
    and q = 0, where the l2 ball's norm is floored."""
    with jax.enable_x64(True):
        radius = jnp.float64(0.5)
        # on the l2 boundary, inside, outside, on the linf boundary, and the zero vector
        q = (jnp.array([0.5, 0.3, 0.0, 2.0, -0.5, 0.0]),
             jnp.array([0.0, 0.4, 0.1, -1.0, 0.0, 0.0]))
        u = (jnp.array([1.0, -2.0, 0.5, 0.3, 0.7, 0.6]),
             jnp.array([0.2, 1.5, -1.0, 0.9, -0.4, -0.8]))
        for project, transpose in [(_ops.project_l2_ball, _ops.project_l2_ball_transpose),
                                   (_ops.project_linf_ball, _ops.project_linf_ball_transpose)]:
            want = jax.vjp(lambda q: project(q, radius), q)[1](u)[0]
            got = transpose(q, radius)(u)
            for g, w in zip(got, want):
                np.testing.assert_allclose(g, w, rtol=1e-14, atol=1e-15)
