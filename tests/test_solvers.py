"""Oracle tests of the variational solvers: scikit-image, closed forms, optimality."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from skimage import data
from skimage.restoration import denoise_tv_chambolle

from jaxden import solvers
from jaxden.solvers import _ops


@functools.partial(jax.jit, static_argnames=("iso", "tol", "max_iter"))
def _tv(y, lam, weights=None, iso=True, tol=1e-10, max_iter=20000):
    return solvers.tv(y, lam, weights, iso=iso, tol=tol, max_iter=max_iter)


def _noisy_crop(image, size=32, sigma=0.1):
    clean = np.asarray(image, np.float64)[200:200 + size, 200:200 + size] / 255.0
    clean = clean[..., None] if clean.ndim == 2 else clean
    return clean + sigma * np.random.default_rng(0).standard_normal(clean.shape)


@pytest.mark.parametrize("image, lam", [("camera", 0.05), ("astronaut", 0.02)])
def test_tv_matches_scikit_image(image, lam):
    """Real photos (32x32 crops at (200, 200), Gaussian noise 0.1, seed 0), both solvers run
    to tight convergence (skimage eps=1e-14; ours residual 1e-10)."""
    with jax.enable_x64(True):
        y = _noisy_crop(getattr(data, image)())
        reference = denoise_tv_chambolle(
            y, weight=lam, eps=1e-14, max_num_iter=100000, channel_axis=-1
        )
        x, info = _tv(jnp.asarray(y), lam)
        difference = float(np.max(np.abs(np.asarray(x) - reference)))
        print(image, y.shape, "max |jaxden - skimage| =", difference, "iterations",
              int(info.iterations))
        assert float(info.residual) <= 1e-10
        assert difference < 1e-6


def _objective(x, y, w, lam_tv=0.0, lam_nuc=0.0, spectral=False, iso=True):
    axes = (0, 1, 2) if spectral else (0, 1)
    d = jnp.stack(_ops.gradient(x, axes, ("replicate",) * len(axes)))
    tv = jnp.sum(jnp.sqrt(jnp.sum(d**2, axis=0))) if iso else jnp.sum(jnp.abs(d))
    nuc = jnp.sum(jnp.linalg.svd(x.reshape(-1, x.shape[-1]), compute_uv=False))
    return 0.5 * jnp.sum(w * (x - y) ** 2) + lam_tv * tv + lam_nuc * nuc


OPTIMALITY_CASES = {
    "tv_iso": (lambda y, w: solvers.tv(y, 0.1, w, tol=1e-11, max_iter=20000),
               dict(lam_tv=0.1)),
    "tv_aniso": (lambda y, w: solvers.tv(y, 0.1, w, iso=False, tol=1e-11, max_iter=20000),
                 dict(lam_tv=0.1, iso=False)),
    "spectral_tv": (lambda y, w: solvers.spectral_tv(y, 0.1, w, tol=1e-11, max_iter=20000),
                    dict(lam_tv=0.1, spectral=True)),
    "nuclear": (lambda y, w: solvers.nuclear(y, 0.5, w, tol=1e-11, max_iter=20000),
                dict(lam_nuc=0.5)),
    "lrtv": (lambda y, w: solvers.lrtv(y, 0.1, 0.5, w, tol=1e-11, max_iter=20000),
             dict(lam_tv=0.1, lam_nuc=0.5)),
}


@pytest.mark.parametrize("name", list(OPTIMALITY_CASES))
def test_solution_beats_random_perturbations(name):
    solve, lams = OPTIMALITY_CASES[name]
    with jax.enable_x64(True):
        rng = np.random.default_rng(0)
        y = jnp.asarray(rng.uniform(size=(8, 7, 4)))
        w = jnp.asarray(np.exp(rng.standard_normal(y.shape)))
        x, info = jax.jit(solve)(y, w)
        assert float(info.residual) <= 1e-11
        objective = jax.jit(functools.partial(_objective, **lams))
        best = objective(x, y, w)
        deltas = rng.standard_normal((20,) + y.shape)
        scales = np.repeat([1e-2, 1e-4], 10)[:, None, None, None]
        perturbed = jax.vmap(objective, (0, None, None))(x + scales * deltas, y, w)
        assert np.all(np.asarray(perturbed) >= best - 1e-12)


def test_nuclear_with_unit_weights_is_singular_value_thresholding():
    with jax.enable_x64(True):
        rng = np.random.default_rng(0)
        spectrum = np.array([1.0, 0.5, 0.2, 0.1])
        rank_one = rng.uniform(size=(9, 8, 1)) * spectrum
        y = rank_one + 0.05 * rng.standard_normal(rank_one.shape)
        u, s, vt = np.linalg.svd(y.reshape(-1, 4), full_matrices=False)
        lam = 0.6
        expected = ((u * np.maximum(s - lam, 0)) @ vt).reshape(y.shape)
        x, info = jax.jit(lambda y: solvers.nuclear(y, lam, tol=1e-12))(jnp.asarray(y))
        np.testing.assert_allclose(x, expected, atol=1e-9)
        assert int(info.iterations) < 5000


def test_nuclear_gradient_is_finite_on_degenerate_spectra():
    """Constant image: one non-zero and repeated zero singular values (svd autodiff NaNs)."""
    y = jnp.full((4, 4, 3), 0.5)
    for mode in ("implicit", "unrolled"):
        grad = jax.grad(lambda y: jnp.sum(solvers.nuclear(y, 0.1, max_iter=50, mode=mode)[0]))
        assert np.all(np.isfinite(np.asarray(grad(y))))


def test_closed_forms_small_lambda_and_constant_image():
    rng = np.random.default_rng(0)
    y = jnp.asarray(rng.uniform(size=(6, 5, 2)), jnp.float32)
    x, _ = _tv(y, 1e-6, tol=1e-6)
    np.testing.assert_allclose(x, y, atol=1e-5)
    constant = jnp.full((6, 5, 2), 0.3)
    x, info = _tv(constant, 0.5, tol=1e-6)
    np.testing.assert_allclose(x, constant, atol=1e-6)
    assert int(info.iterations) <= 10  # the first residual check (every 10 steps) stops it


def test_batch_solves_each_image_and_reports_per_image_info():
    rng = np.random.default_rng(0)
    y = jnp.asarray(rng.uniform(size=(3, 6, 5, 2)), jnp.float32)
    lam = jnp.array([0.05, 0.1, 0.2], jnp.float32)
    x, info = _tv(y, lam, tol=1e-5)
    assert info.residual.shape == (3,) and info.iterations.shape == (3,)
    assert np.all(np.asarray(info.residual) <= 1e-5)
    for i in range(3):
        np.testing.assert_allclose(x[i], _tv(y[i], lam[i], tol=1e-5)[0], atol=1e-4)


@pytest.mark.parametrize("boundary", ["replicate", "periodic"])
def test_difference_adjoint(boundary):
    rng = np.random.default_rng(0)
    x, p = rng.standard_normal((5, 4, 3)), rng.standard_normal((5, 4, 3))
    for axis in range(3):
        lhs = np.vdot(_ops.diff(x, axis, boundary), p)
        rhs = np.vdot(x, _ops.diff_adjoint(p, axis, boundary))
        np.testing.assert_allclose(lhs, rhs, rtol=1e-5)


def test_periodic_boundary_differs_and_converges():
    y = jnp.asarray(np.random.default_rng(0).uniform(size=(6, 5, 1)), jnp.float32)
    x_periodic, info = solvers.tv(y, 0.1, boundary="periodic")
    assert float(info.residual) <= 1e-5
    assert float(jnp.max(jnp.abs(x_periodic - _tv(y, 0.1, tol=1e-5)[0]))) > 1e-3


def test_bad_arguments_name_the_fix():
    y = jnp.zeros((4, 4, 2))
    with pytest.raises(ValueError, match="weights must have"):
        solvers.tv(y, 0.1, jnp.ones((4, 4)))
    with pytest.raises(ValueError, match="positive"):
        solvers.tv(y, 0.1, -jnp.ones((4, 4, 2)))
    with pytest.raises(ValueError, match="lam must be > 0"):
        solvers.tv(y, 0.0)
    with pytest.raises(ValueError, match="lam_nuc must be > 0"):
        solvers.lrtv(y, 0.1, -1.0)
    with pytest.raises(ValueError, match="boundary"):
        solvers.spectral_tv(y, 0.1, boundary="reflect")
    with pytest.raises(ValueError, match="channel axis"):
        solvers.nuclear(jnp.zeros((4, 4)), 0.1)
