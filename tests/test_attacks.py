"""jaxden.attacks: the standard sanity checks of attack code (Carlini et al., "On Evaluating
Adversarial Robustness", 2019) on a real, smooth classifier: softmax regression trained on
scikit-learn's digits (8x8, 10 classes; ~95% test accuracy).

- the perturbation stays inside the eps-ball and the image box;
- robust accuracy does not rise with the budget;
- more PGD steps (same key and step size) never give higher robust accuracy than fewer;
- an unbounded budget drives the classifier to ~0%, and a targeted one to the target;
- gradients are not masked: one FGSM step lowers accuracy;
- results do not depend on the device count (8 simulated devices vs 1);
- the attack differentiates through a denoise-then-classify pipeline.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding, PartitionSpec

from jaxden import attacks, data

EPS_LINF = (0.0, 0.02, 0.05, 0.1, 0.2)
EPS_L2 = (0.0, 0.1, 0.3, 1.0, 2.0)


def linear_classifier(params, x):
    return x.reshape(x.shape[0], -1) @ params["w"] + params["b"]


@functools.cache
def trained():
    """(params, test images, test labels): softmax regression, 1000 full-batch
    gradient-descent steps on the 1500 digits training images."""
    train = data.load_labelled("digits", split="train", grayscale=True)
    test = data.load_labelled("digits", split="test", grayscale=True)
    x, y = jnp.asarray(train.images), jnp.asarray(train.labels)

    def loss(params):
        log_probs = jax.nn.log_softmax(linear_classifier(params, x))
        return -jnp.mean(jnp.take_along_axis(log_probs, y[:, None], -1))

    @jax.jit
    def fit(params):
        return jax.lax.fori_loop(
            0, 1000, lambda _, p: jax.tree.map(lambda a, g: a - 2.0 * g, p, jax.grad(loss)(p)),
            params)

    params = fit({"w": jnp.zeros((64, 10)), "b": jnp.zeros(10)})
    return params, jnp.asarray(test.images[:200]), jnp.asarray(test.labels[:200])


def accuracy(params, x, labels):
    return float(jnp.mean(jnp.argmax(linear_classifier(params, x), -1) == labels))


def pgd(x, labels, eps, norm, steps=10, step_size=None, restarts=1, key=0, **kwargs):
    params, _, _ = trained()
    step_size = step_size if step_size is not None else 2.5 * eps / max(steps, 1)
    return attacks.pgd(linear_classifier, params, x, labels, jax.random.key(key), eps,
                       step_size, norm=norm, steps=steps, restarts=restarts, **kwargs)


def test_classifier_is_trained():
    params, x, labels = trained()
    assert accuracy(params, x, labels) > 0.9


@pytest.mark.parametrize("norm,eps", [("linf", 0.05), ("l2", 0.5)])
def test_perturbation_inside_ball_and_box(norm, eps):
    _, x, labels = trained()
    x_adv = pgd(x, labels, eps, norm)
    delta = x_adv - x
    size = jnp.max(jnp.abs(delta), axis=(1, 2, 3)) if norm == "linf" else attacks.l2_norms(delta)
    assert float(jnp.max(size)) <= eps * (1 + 1e-5)
    assert float(jnp.min(x_adv)) >= 0.0 and float(jnp.max(x_adv)) <= 1.0
    assert float(jnp.max(size)) > 0.5 * eps  # it did move


@pytest.mark.parametrize("norm,grid", [("linf", EPS_LINF), ("l2", EPS_L2)])
def test_accuracy_does_not_rise_with_budget(norm, grid):
    params, x, labels = trained()
    accs = [accuracy(params, pgd(x, labels, eps, norm), labels) for eps in grid]
    assert accs[0] == accuracy(params, x, labels)  # eps 0 is the clean accuracy
    assert all(b <= a for a, b in zip(accs, accs[1:])), accs
    assert accs[-1] < accs[0] - 0.3, accs  # and the attack bites


@pytest.mark.parametrize("norm,eps", [("linf", 0.05), ("l2", 0.3)])
def test_more_steps_never_higher_accuracy(norm, eps):
    params, x, labels = trained()
    accs = [accuracy(params, pgd(x, labels, eps, norm, steps=n, step_size=eps / 4), labels)
            for n in (0, 1, 3, 10, 30)]
    assert all(b <= a for a, b in zip(accs, accs[1:])), accs
    assert accs[-1] < accs[0], accs
    with_restarts = accuracy(params, pgd(x, labels, eps, norm, steps=10, step_size=eps / 4,
                                         restarts=3), labels)
    assert with_restarts <= accs[3]


def test_unbounded_budget_breaks_a_plain_classifier():
    params, x, labels = trained()
    for norm, eps in (("linf", 1.0), ("l2", 8.0)):
        assert accuracy(params, pgd(x, labels, eps, norm, steps=20), labels) <= 0.01


def test_targeted_attack_reaches_its_target():
    params, x, labels = trained()
    target = (labels + 1) % 10
    x_adv = pgd(x, target, 1.0, "linf", steps=20, targeted=True)
    hit = jnp.mean(jnp.argmax(linear_classifier(params, x_adv), -1) == target)
    assert float(hit) >= 0.99


@pytest.mark.parametrize("norm,eps", [("linf", 0.05), ("l2", 0.5)])
def test_fgsm_lowers_accuracy_no_gradient_masking(norm, eps):
    params, x, labels = trained()
    x_adv = attacks.fgsm(linear_classifier, params, x, labels, eps, norm=norm)
    clean, adversarial = accuracy(params, x, labels), accuracy(params, x_adv, labels)
    assert adversarial < clean - 0.1, (clean, adversarial)
    # PGD from the same point is at least as strong as one FGSM step
    assert accuracy(params, pgd(x, labels, eps, norm, random_start=False), labels) <= adversarial


def test_same_result_on_8_devices_and_1():
    params, x, labels = trained()
    assert jax.device_count() == 8 and len(x) % 8 == 0
    mesh = jax.make_mesh((8,), ("data",))
    sharded = NamedSharding(mesh, PartitionSpec("data"))
    x8, labels8 = jax.device_put(x, sharded), jax.device_put(labels, sharded)
    one = jax.devices()[0]
    x1, labels1 = jax.device_put(x, one), jax.device_put(labels, one)
    for norm, eps in (("linf", 0.05), ("l2", 0.5)):
        a8 = pgd(x8, labels8, eps, norm, restarts=2)
        a1 = pgd(x1, labels1, eps, norm, restarts=2)
        assert len(a8.sharding.device_set) == 8
        np.testing.assert_allclose(np.asarray(a8), np.asarray(a1), rtol=0, atol=1e-6)


def test_attack_goes_through_denoise_then_classify():
    """A pipeline of a (differentiable) blur 'denoiser' and the classifier: the attack needs
    the gradient through the denoiser, and breaks the pipeline at a large budget."""
    params, x, labels = trained()

    def blur(weight, x):
        padded = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)), mode="edge")
        neighbours = (padded[:, :-2, 1:-1] + padded[:, 2:, 1:-1] + padded[:, 1:-1, :-2]
                      + padded[:, 1:-1, 2:]) / 4
        return (1 - weight) * x + weight * neighbours

    pipeline = attacks.denoise_then_classify(blur, linear_classifier)
    pipeline_params = (jnp.asarray(0.3), params)
    clean = float(jnp.mean(jnp.argmax(pipeline(pipeline_params, x), -1) == labels))
    x_adv = attacks.pgd(pipeline, pipeline_params, x, labels, jax.random.key(0), 0.2, 0.05,
                        norm="linf", steps=20)
    attacked = float(jnp.mean(jnp.argmax(pipeline(pipeline_params, x_adv), -1) == labels))
    assert clean > 0.85 and attacked < 0.05, (clean, attacked)


def test_rejects_unknown_norm():
    params, x, labels = trained()
    with pytest.raises(ValueError, match="norm='l1'.*choose one of"):
        attacks.fgsm(linear_classifier, params, x, labels, 0.1, norm="l1")
