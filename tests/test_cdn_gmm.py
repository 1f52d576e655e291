"""A small classification-denoising network trained on a Gaussian mixture approaches the
Bayes-optimal classifier and MMSE denoisers (issue 4, item 6; Thiry & Guth, arXiv 2410.03505).

Data: K = 3 classes with priors pi_c, x | c ~ N(mu_c, s_c^2 I) in d = 4 (an "image" of shape
(2, 2, 1)), y = x + sigma * eps. Closed forms (numpy float64, independent of jaxden):
y | c ~ N(mu_c, (s_c^2 + sigma^2) I) gives p(c | y) by Bayes,
E[x | y, c] = mu_c + s_c^2 / (s_c^2 + sigma^2) (y - mu_c) and
E[x | y] = sum_c p(c | y) E[x | y, c]. MMSE and Bayes accuracy are Monte Carlo averages over
a fixed test sample.

Model: an NNX MLP energy f_c(y, sigma) on [flatten(y), log sigma], smooth (GELU) because the
loss differentiates through grad_y f. Its log-joint ``lambda y: model(y, sigma)`` goes to
jaxden.tweedie unchanged, so the test checks the read-out as well as the training signal.
"""

import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx
from scipy import special

from jaxden import tweedie

SHAPE = (2, 2, 1)  # (H, W, C)
D = int(np.prod(SHAPE))
MU = np.array([[0.0, 0.0, 0.0, 0.0], [1.5, 1.5, 0.0, 0.0], [0.0, 1.5, 1.5, -1.0]])
S = np.array([0.6, 0.4, 0.8])
PI = np.array([0.5, 0.3, 0.2])
K = len(PI)
SIGMA_RANGE = (0.05, 2.0)  # training: log-uniform per sample
TEST_SIGMAS = (0.1, 0.5, 1.0)
STEPS, CHUNK, BATCH, LR = 4000, 500, 256, 2e-3
NUM_TEST = 20000
SEED = 0


class Energy(nnx.Module):
    """f_c(y, sigma), c < K: an MLP on [flatten(y), log sigma], per-sample, GELU."""

    def __init__(self, width: int, depth: int, *, rngs: nnx.Rngs):
        sizes = [D + 1] + [width] * depth
        self.hidden = nnx.List(
            [nnx.Linear(a, b, rngs=rngs) for a, b in zip(sizes[:-1], sizes[1:])]
        )
        self.out = nnx.Linear(width, K, rngs=rngs)

    def __call__(self, y, sigma):
        sigma = jnp.broadcast_to(jnp.asarray(sigma, y.dtype), y.shape[:1])
        h = jnp.concatenate([y.reshape(y.shape[0], -1), jnp.log(sigma)[:, None]], axis=-1)
        for layer in self.hidden:
            h = jax.nn.gelu(layer(h))
        return self.out(h)


def sample(key, n):
    """(x (n, H, W, C), c (n,)) from the mixture, in jnp float32."""
    kc, kx = jax.random.split(key)
    c = jax.random.choice(kc, K, (n,), p=jnp.asarray(PI, jnp.float32))
    mu = jnp.asarray(MU, jnp.float32).reshape(K, *SHAPE)
    s = jnp.asarray(S, jnp.float32)
    x = mu[c] + s[c, None, None, None] * jax.random.normal(kx, (n, *SHAPE))
    return x, c


def loss_fn(model, x, c, sigma, eps):
    """CE(log p(c | y), c) + mean_b ||D(y_b) - x_b||^2 / (d sigma_b^2).

    The denoising term is weighted by 1 / sigma^2 (score matching with lambda = sigma^2):
    the MMSE grows like sigma^2 at small sigma, so without the weight the small noise levels
    would hardly count; with it every level contributes O(1), like the cross-entropy.
    """
    y = x + sigma[:, None, None, None] * eps
    denoised, log_probs = tweedie.denoise_and_classify(lambda y: model(y, sigma), y, sigma)
    ce = -jnp.mean(jnp.take_along_axis(log_probs, c[:, None], axis=-1))
    dsm = jnp.mean(jnp.sum((denoised - x) ** 2, axis=(1, 2, 3)) / (D * sigma**2))
    return ce + dsm, (ce, dsm)


def train(seed=0):
    model = Energy(width=128, depth=3, rngs=nnx.Rngs(seed))
    graphdef, params = nnx.split(model)
    tx = optax.adam(optax.cosine_decay_schedule(LR, STEPS, alpha=0.05))
    opt_state = tx.init(params)
    key = jax.random.key(seed + 1)
    lo, hi = np.log(SIGMA_RANGE[0]), np.log(SIGMA_RANGE[1])

    def step(carry, step_index):
        params, opt_state = carry
        kx, ks, ke = jax.random.split(jax.random.fold_in(key, step_index), 3)
        x, c = sample(kx, BATCH)
        sigma = jnp.exp(jax.random.uniform(ks, (BATCH,), minval=lo, maxval=hi))
        eps = jax.random.normal(ke, x.shape)

        def loss(params):
            return loss_fn(nnx.merge(graphdef, params), x, c, sigma, eps)

        (total, (ce, dsm)), grads = jax.value_and_grad(loss, has_aux=True)(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        return (optax.apply_updates(params, updates), opt_state), jnp.stack([total, ce, dsm])

    @jax.jit
    def run_chunk(params, opt_state, start):
        (params, opt_state), losses = jax.lax.scan(
            step, (params, opt_state), start + jnp.arange(CHUNK)
        )
        return params, opt_state, losses.mean(0)

    for start in range(0, STEPS, CHUNK):
        params, opt_state, losses = run_chunk(params, opt_state, start)
        total, ce, dsm = np.asarray(losses)
        assert np.isfinite(total), (start, losses)
        print(f"steps {start:5d}-{start + CHUNK - 1:5d}: "
              f"loss {total:.4f} ce {ce:.4f} dsm {dsm:.4f}")
    return graphdef, params


def oracle(sigma, y):
    """(log p(c | y) (n, K), E[x | y] (n, d), E[x | y, c] (n, K, d)), numpy float64."""
    var = S**2 + sigma**2
    sq = np.sum((y[:, None] - MU[None]) ** 2, axis=-1)
    log_joint = np.log(PI) - 0.5 * sq / var - 0.5 * D * np.log(2 * np.pi * var)
    log_post = log_joint - special.logsumexp(log_joint, axis=1, keepdims=True)
    cond = MU[None] + (S**2 / var)[None, :, None] * (y[:, None] - MU[None])
    marg = np.einsum("nk,nkd->nd", np.exp(log_post), cond)
    return log_post, marg, cond


@pytest.mark.slow
def test_cdn_approaches_bayes_optimal_on_gaussian_mixture():
    """Trained 4000 steps of batch 256 (about 30 s on 2 busy cores), the model's marginal
    denoiser E[x | y], class-conditional denoiser E[x | y, c] (true label) and classifier come
    close to the closed-form optima at sigma = 0.1, 0.5, 1.0 on 20000 fixed test samples.

    "gain" is the fraction of the achievable improvement over the noisy input that the model
    realises, (noisy - MSE) / (noisy - MMSE): at sigma = 0.1 the noisy input y itself has
    MSE / MMSE = 1.03, so the ratio alone says little there and the gain carries the check.

    Measured (seed 0; seeds 1 and 2 alike): MSE / MMSE = 1.0001, 1.0022, 1.0045 (gain 0.998,
    0.996, 0.997); conditional MSE / optimum = 1.0000, 1.0031, 1.0116 (gain >= 0.996);
    accuracy - Bayes accuracy = -0.0005, -0.0000, +0.0009 (Bayes 0.954, 0.884, 0.751).
    Over seeds 0-2 the worst were ratio 1.0045, conditional ratio 1.0116, gain 0.984 and
    accuracy gap -0.0005. Asserted: ratio <= 1.03, conditional ratio <= 1.05, both gains
    >= 0.9, accuracy >= Bayes - 0.01.
    """
    t0 = time.perf_counter()
    graphdef, params = train(SEED)
    t_train = time.perf_counter() - t0

    rng = np.random.default_rng(SEED + 123)
    c = rng.choice(K, NUM_TEST, p=PI)
    x = MU[c] + S[c, None] * rng.normal(size=(NUM_TEST, D))
    eps = rng.normal(size=(NUM_TEST, D))

    @jax.jit
    def read_out(params, y, sigma, label):
        model = nnx.merge(graphdef, params)
        log_joint = lambda y: model(y, sigma)  # noqa: E731
        denoised, log_probs = tweedie.denoise_and_classify(log_joint, y, sigma)
        return denoised, log_probs, tweedie.denoise(log_joint, y, sigma, label)

    rows = [f"{'sigma':>5} {'noisy':>8} {'MSE':>8} {'MMSE':>8} {'ratio':>6} {'gain':>5} "
            f"{'acc':>6} {'bayes':>6} {'diff':>7} {'condMSE':>8} {'condOpt':>8} {'ratio':>6} "
            f"{'gain':>5}"]
    results = {}
    for sigma in TEST_SIGMAS:
        y = x + sigma * eps
        log_post, marg, cond = oracle(sigma, y)
        denoised, log_probs, cond_model = read_out(
            params, jnp.asarray(y.reshape(NUM_TEST, *SHAPE), jnp.float32), jnp.float32(sigma),
            jnp.asarray(c, jnp.int32),
        )
        denoised = np.asarray(denoised, np.float64).reshape(NUM_TEST, D)
        cond_model = np.asarray(cond_model, np.float64).reshape(NUM_TEST, D)
        noisy = np.mean((y - x) ** 2)
        mse, mmse = np.mean((denoised - x) ** 2), np.mean((marg - x) ** 2)
        cond_mse = np.mean((cond_model - x) ** 2)
        cond_opt = np.mean((cond[np.arange(NUM_TEST), c] - x) ** 2)
        acc = np.mean(np.asarray(log_probs).argmax(1) == c)
        bayes = np.mean(log_post.argmax(1) == c)
        gain = (noisy - mse) / (noisy - mmse)
        cond_gain = (noisy - cond_mse) / (noisy - cond_opt)
        results[sigma] = dict(ratio=mse / mmse, gain=gain, acc_gap=acc - bayes,
                              cond_ratio=cond_mse / cond_opt, cond_gain=cond_gain)
        rows.append(f"{sigma:5.2f} {noisy:8.5f} {mse:8.5f} {mmse:8.5f} {mse / mmse:6.4f} "
                    f"{gain:5.3f} {acc:6.4f} {bayes:6.4f} {acc - bayes:+7.4f} {cond_mse:8.5f} "
                    f"{cond_opt:8.5f} {cond_mse / cond_opt:6.4f} {cond_gain:5.3f}")
    rows.append(f"train {t_train:.1f} s, total {time.perf_counter() - t0:.1f} s")
    print("\n" + "\n".join(rows))

    for sigma, r in results.items():
        assert r["ratio"] <= 1.03 and r["gain"] >= 0.9, (sigma, r)
        assert r["cond_ratio"] <= 1.05 and r["cond_gain"] >= 0.9, (sigma, r)
        assert r["acc_gap"] >= -0.01, (sigma, r)
