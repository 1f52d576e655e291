"""Oracle tests of jaxden.tweedie on a Gaussian mixture, where everything has a closed form.

Classes c with priors pi_c, x | c ~ N(mu_c, s_c^2 I) and y = x + sigma * eps, so
y | c ~ N(mu_c, (s_c^2 + sigma^2) I); p(c | y) follows by Bayes,
E[x | y, c] = mu_c + s_c^2 / (s_c^2 + sigma^2) (y - mu_c) and
E[x | y] = sum_c p(c | y) E[x | y, c]. The oracle is numpy/scipy in float64, written apart
from the jnp log-joint handed to tweedie. All tests run in float64.
"""

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import special, stats

from jaxden import tweedie

SHAPE = (3, 2, 1)  # (H, W, C): d = 6
K = 3


@pytest.fixture(autouse=True)
def _x64():
    with jax.enable_x64(True):
        yield


def _mixture(seed=0):
    rng = np.random.default_rng(seed)
    mu = rng.normal(size=(K, *SHAPE))
    s = np.array([0.3, 0.7, 1.2])
    pi = np.array([0.2, 0.5, 0.3])
    return mu, s, pi


def gmm_log_joint(mu, s, log_pi, sigma):
    """f_c(y) = log pi_c + log N(y; mu_c, (s_c^2 + sigma^2) I), sigma scalar or (B,)."""

    def log_joint(y):
        sigma_b = jnp.broadcast_to(sigma, y.shape[:1])
        var = s[None, :] ** 2 + sigma_b[:, None] ** 2  # (B, K)
        sq = jnp.sum((y[:, None] - mu[None]) ** 2, axis=(2, 3, 4))  # (B, K)
        d = np.prod(y.shape[1:])
        return log_pi - 0.5 * sq / var - 0.5 * d * jnp.log(2 * jnp.pi * var)

    return log_joint


def oracle(mu, s, pi, sigma, y):
    """(log p(c|y) (B, K), E[x|y] (B, H, W, C), E[x|y,c] (B, K, H, W, C)), numpy float64."""
    batch = y.shape[0]
    sd = np.sqrt(s[None, :] ** 2 + np.broadcast_to(sigma, (batch,))[:, None] ** 2)
    lik = stats.norm.logpdf(y[:, None], mu[None], sd[:, :, None, None, None])
    log_joint = np.log(pi) + lik.reshape(batch, K, -1).sum(-1)
    log_post = log_joint - special.logsumexp(log_joint, axis=1, keepdims=True)
    gain = (s[None, :] / sd) ** 2
    cond = mu[None] + gain[..., None, None, None] * (y[:, None] - mu[None])
    marg = np.einsum("bk,bk...->b...", np.exp(log_post), cond)
    return log_post, marg, cond


@functools.partial(jax.jit, static_argnames="conditional")
def _denoise_classify(mu, s, log_pi, sigma, y, label, conditional=True):
    log_joint = gmm_log_joint(mu, s, log_pi, sigma)
    d, log_probs = tweedie.denoise_and_classify(
        log_joint, y, sigma, label if conditional else None
    )
    return d, log_probs, tweedie.classify(log_joint, y)


def _jnp(*arrays):
    return [jnp.asarray(a) for a in arrays]


@pytest.mark.parametrize("sigma", [0.1, 0.5, 2.0, "per_sample"])
def test_matches_gaussian_mixture_posterior(sigma):
    mu, s, pi = _mixture()
    rng = np.random.default_rng(1)
    batch = 5
    if sigma == "per_sample":
        sigma = np.array([0.05, 0.1, 0.5, 1.0, 3.0])
    y = rng.normal(size=(batch, *SHAPE)) * 1.5
    log_post, marg, cond = oracle(mu, s, pi, sigma, y)
    args = _jnp(mu, s, np.log(pi), sigma, y)

    d, log_probs, classified = _denoise_classify(
        *args, jnp.zeros(batch, int), conditional=False
    )
    chex.assert_trees_all_close(d, marg, rtol=1e-10, atol=1e-12)
    chex.assert_trees_all_close(log_probs, log_post, rtol=1e-10, atol=1e-12)
    chex.assert_trees_all_close(classified, log_post, rtol=1e-10, atol=1e-12)
    for c in range(K):
        d_c, _, _ = _denoise_classify(*args, jnp.full(batch, c))
        chex.assert_trees_all_close(d_c, cond[:, c], rtol=1e-10, atol=1e-12)
    label = rng.integers(0, K, batch)
    d_mixed, _, _ = _denoise_classify(*args, jnp.asarray(label))
    chex.assert_trees_all_close(d_mixed, cond[np.arange(batch), label], rtol=1e-10)


def test_score_returns_forward_values():
    mu, s, pi = _mixture()
    y = np.random.default_rng(2).normal(size=(4, *SHAPE))
    log_joint = gmm_log_joint(*_jnp(mu, s, np.log(pi)), 0.5)
    grad, f = tweedie.score(log_joint, jnp.asarray(y))
    chex.assert_trees_all_close(f, log_joint(jnp.asarray(y)), rtol=1e-12)
    _, marg, _ = oracle(mu, s, pi, 0.5, y)
    chex.assert_trees_all_close(grad, (marg - y) / 0.5**2, rtol=1e-10, atol=1e-12)


def test_jit_and_vmap_agree_with_eager():
    mu, s, pi = _mixture()
    rng = np.random.default_rng(3)
    groups, batch = 2, 4
    y = jnp.asarray(rng.normal(size=(groups, batch, *SHAPE)))
    sigma = jnp.asarray(rng.uniform(0.1, 2.0, (groups, batch)))
    label = jnp.asarray(rng.integers(0, K, (groups, batch)))
    mu, s, log_pi = _jnp(mu, s, np.log(pi))

    def both(y, sigma, label):
        log_joint = gmm_log_joint(mu, s, log_pi, sigma)
        return (
            tweedie.denoise(log_joint, y, sigma),
            tweedie.denoise(log_joint, y, sigma, label),
            tweedie.classify(log_joint, y),
        )

    eager = [both(y[g], sigma[g], label[g]) for g in range(groups)]
    eager = jax.tree.map(lambda *xs: jnp.stack(xs), *eager)
    chex.assert_trees_all_close(jax.jit(jax.vmap(both))(y, sigma, label), eager, rtol=1e-12)
    chex.assert_trees_all_close(jax.jit(both)(y[0], sigma[0], label[0]),
                                jax.tree.map(lambda a: a[0], eager), rtol=1e-12)


def test_sharded_batch_matches_single_device():
    mu, s, pi = _mixture()
    rng = np.random.default_rng(4)
    batch = 16
    y = jnp.asarray(rng.normal(size=(batch, *SHAPE)))
    sigma = jnp.asarray(rng.uniform(0.1, 2.0, batch))
    label = jnp.asarray(rng.integers(0, K, batch))
    args = _jnp(mu, s, np.log(pi))
    expected = _denoise_classify(*args, sigma, y, label)

    mesh = jax.make_mesh((8,), ("data",))
    data = jax.sharding.NamedSharding(mesh, jax.P("data"))
    y_s, sigma_s, label_s = jax.device_put((y, sigma, label), data)
    got = _denoise_classify(*args, sigma_s, y_s, label_s)
    chex.assert_trees_all_close(got, expected, rtol=1e-12)
    assert got[0].sharding.is_equivalent_to(data, got[0].ndim)


def test_one_forward_and_one_backward_pass_for_the_whole_batch():
    """The backward pass runs once, eagerly, on the batch's (B, K) cotangent, not per sample.

    The cotangent of f is d(sum_b logsumexp_c f_c)/df = softmax(f) = p(c | y), or the
    one-hot of the labels: a per-sample Jacobian (a loop, or jacrev's vmap over basis
    vectors) would call the backward rule B times or under a batching tracer instead.
    """
    mu, s, pi = _mixture()
    batch = 4
    y = jnp.asarray(np.random.default_rng(5).normal(size=(batch, *SHAPE)))
    inner = gmm_log_joint(*_jnp(mu, s, np.log(pi)), 0.5)
    cotangents = []

    @jax.custom_vjp
    def log_joint(y):
        return inner(y)

    def fwd(y):
        return inner(y), y

    def bwd(y, ct):
        cotangents.append(np.asarray(ct))  # fails on a tracer: the pass must be concrete
        return jax.vjp(inner, y)[1](ct)

    log_joint.defvjp(fwd, bwd)

    d = tweedie.denoise(log_joint, y, 0.5)
    assert len(cotangents) == 1
    np.testing.assert_allclose(cotangents[0], jax.nn.softmax(inner(y)), rtol=1e-12)
    chex.assert_trees_all_close(d, tweedie.denoise(inner, y, 0.5), rtol=1e-12)

    label = jnp.array([2, 0, 1, 2])
    tweedie.denoise(log_joint, y, 0.5, label)
    assert len(cotangents) == 2
    np.testing.assert_array_equal(cotangents[1], jax.nn.one_hot(label, K))

    traced = []

    def counting(y):
        traced.append(y.shape)
        return inner(y)

    jaxpr = jax.make_jaxpr(lambda y: tweedie.denoise_and_classify(counting, y, 0.5))(y)
    assert traced == [y.shape]  # the network is traced once, on the whole batch
    assert not {"scan", "while"} & {eqn.primitive.name for eqn in jaxpr.eqns}


def test_score_of_a_sample_ignores_the_others():
    mu, s, pi = _mixture()
    y = np.random.default_rng(6).normal(size=(4, *SHAPE))
    args = _jnp(mu, s, np.log(pi))
    label = jnp.array([0, 1, 2, 0])
    before = _denoise_classify(*args, 0.5, jnp.asarray(y), label)
    y[0] += 3.0
    after = _denoise_classify(*args, 0.5, jnp.asarray(y), label)
    chex.assert_trees_all_close(jax.tree.map(lambda a: a[1:], after),
                                jax.tree.map(lambda a: a[1:], before), rtol=1e-12)
    assert not np.allclose(after[0][0], before[0][0])


@pytest.mark.parametrize("conditional", [False, True])
def test_double_backprop_matches_finite_differences(conditional):
    """d/dmu of sum ||D(y) - x||^2, through the score: second derivatives of log_joint."""
    mu, s, pi = _mixture()
    rng = np.random.default_rng(7)
    batch = 3
    x = jnp.asarray(rng.normal(size=(batch, *SHAPE)))
    sigma = jnp.asarray([0.3, 0.8, 1.5])
    y = x + sigma[:, None, None, None] * jnp.asarray(rng.normal(size=x.shape))
    s, log_pi = _jnp(s, np.log(pi))
    label = jnp.asarray([1, 0, 2])

    @jax.jit
    def loss(mu):
        d, _, _ = _denoise_classify(mu, s, log_pi, sigma, y, label, conditional=conditional)
        return jnp.sum((d - x) ** 2)

    grad = jax.jit(jax.grad(loss))(jnp.asarray(mu))
    eps = 1e-6
    fd = np.zeros_like(mu)
    for i in np.ndindex(mu.shape):
        step = np.zeros_like(mu)
        step[i] = eps
        fd[i] = (loss(jnp.asarray(mu + step)) - loss(jnp.asarray(mu - step))) / (2 * eps)
    np.testing.assert_allclose(grad, fd, rtol=1e-6, atol=1e-8)
    assert np.abs(fd).max() > 1e-2  # the means matter: not a vacuous zero gradient


def test_bad_inputs_raise():
    mu, s, pi = _mixture()
    log_joint = gmm_log_joint(*_jnp(mu, s, np.log(pi)), 0.5)
    y = jnp.zeros((4, *SHAPE))
    with pytest.raises(ValueError, match="label must be"):
        tweedie.denoise(log_joint, y, 0.5, jnp.zeros((4, 1), int))
    with pytest.raises(ValueError, match="label must be"):
        tweedie.score(log_joint, y, jnp.zeros(3, int))
    with pytest.raises(ValueError, match="label must be"):
        tweedie.denoise(log_joint, y, 0.5, jnp.zeros(4))
    with pytest.raises(ValueError, match="sigma must be"):
        tweedie.denoise(log_joint, y, jnp.full((4, 1), 0.5))
    with pytest.raises(ValueError, match="sigma must be"):
        tweedie.denoise_and_classify(log_joint, y, jnp.full(3, 0.5))
    with pytest.raises(AssertionError):
        tweedie.denoise(log_joint, y[0], 0.5)  # no batch axis
    with pytest.raises(AssertionError):
        tweedie.classify(lambda y: jnp.zeros(y.shape[0]), y)  # scores not (B, K)
