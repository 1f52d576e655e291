"""Robust accuracy of trained classifiers under PGD and FGSM, and adversarial gradients as
denoiser differences (issue 5; Thiry & Guth, arXiv 2410.03505, claim: a joint energy
classifier is more robust than a plain one, and grad_y log p(c|y) = (D(y, c) - D(y)) / sigma^2).

    python eval.py --workdir runs/cdn/joint --robustness configs/robustness.py:quick

evaluates the run in ``--workdir`` and the runs named in ``robustness.baselines`` on the same
test images, and writes ``WORKDIR/eval/robustness/``: ``results.md`` / ``results.json`` (robust
accuracy per budget, clean accuracy beside), ``accuracy.png`` (accuracy against budget) and,
for a classification-denoising run, ``adversarial_gradients.png`` with the identity's error
(``robustness.out_dir`` to write elsewhere).

Which classifiers a run gives (``classifiers``):
- ``cdn`` runs that classify: the energy classifier softmax_c f_c(x) told the noise level
  ``robustness.sigma`` (0 by default, as in the sigma = 0 column of the CDN table); for a joint
  run also the
  pipeline x -> D(x) at ``robustness.pipeline_sigma`` -> the same classifier;
- ``multitask`` runs that classify: the AddUNet classification head on x.

Every attack is white-box: it differentiates through the whole classifier, the Tweedie
denoiser of the pipeline included (a double backprop per PGD step).
"""

import dataclasses
import os
from collections.abc import Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import nnx

from jaxden import attacks, methods, tweedie
from jaxden.evaluate import save_figure, save_markdown_and_json, subplots
from jaxden.experiment import load_config
from jaxden.methods.labelled import fixed_noisy, load_split
from jaxden.train import mesh as mesh_lib
from jaxden.train.loop import restore_model

NORM_UNITS = {"linf": "/255", "l2": ""}


@dataclasses.dataclass(frozen=True)
class Entry:
    """One row of the table: a classifier ``fn(params, x) -> logits`` and its params."""

    label: str
    fn: Callable
    params: object


def _cdn_log_joint(graphdef, config):
    from jaxden.methods.cdn import make_log_joint

    floor = config.noise.sigma_min / 255.0

    def log_joint(state, sigma):
        def f(y):
            return make_log_joint(nnx.merge(graphdef, state), jnp.full(y.shape[:1], sigma, y.dtype),
                                  scale=config.log_joint_scale, sigma_floor=floor)(y)
        return f

    return log_joint


def restore(workdir: str):
    """(model, config) of the latest checkpoint in ``workdir``."""
    config = load_config(workdir)
    model, config, _ = restore_model(methods.get(config.method), workdir, config)
    return model, config


def classifiers(model, config, rc: ml_collections.ConfigDict) -> list[Entry]:
    """The rows a restored run contributes (module docstring)."""
    graphdef, state = nnx.split(model)
    if config.method == "multitask":
        from jaxden.methods.multitask_eval import row_label

        if "classify" not in tuple(config.model.tasks):
            return []
        return [Entry(f"AddUNet {row_label(config)} head",
                      lambda s, x: nnx.merge(graphdef, s)(x)[1], state)]
    if config.method != "cdn":
        raise ValueError(f"method {config.method!r} has no classifier; robustness "
                         f"needs a 'cdn' or 'multitask' run")
    from jaxden.methods.cdn_eval import row_label, trained_tasks

    tasks = trained_tasks(config)
    if "classify" not in tasks:
        return []
    log_joint = _cdn_log_joint(graphdef, config)
    sigma, sigma_d = rc.sigma / 255.0, rc.pipeline_sigma / 255.0

    def energy(s, x):
        return log_joint(s, sigma)(x)

    label = row_label(config)
    if tasks == ("classify",):  # name what it was trained on: clean or noisy inputs
        label += " (clean inputs)" if config.noise.sigma_max < 1 else " (noisy inputs)"
    rows = [Entry(f"{label}: energy classifier" if "denoise" in tasks else label, energy, state)]
    if "denoise" in tasks and rc.pipeline_sigma > 0:
        def denoise(s, x):
            return tweedie.denoise(log_joint(s, sigma_d), x, sigma_d)

        rows.append(Entry(f"{label}: D(x) at σ={rc.pipeline_sigma:g} → classifier",
                          attacks.denoise_then_classify(denoise, energy), (state, state)))
    return rows


def _batches(images, labels, batch_size):
    """Batches sharded over the devices (of the mesh set by ``evaluate_robustness``) when
    they split evenly, else on one device."""
    sharding = mesh_lib.batch_sharded(mesh_lib.data_mesh())
    for start in range(0, len(images), batch_size):
        x, y = images[start:start + batch_size], labels[start:start + batch_size]
        if len(x) % jax.device_count() == 0:
            x, y = jax.device_put(x, sharding), jax.device_put(y, sharding)
        yield start, x, y


def _accuracy(entry: Entry, images, labels, rc, attack=None, norm=None, eps=0.0) -> float:
    """Accuracy on (images, labels) after ``attack`` ("pgd", "fgsm" or None: clean)."""
    correct = 0
    for start, x, y in _batches(images, labels, rc.batch_size):
        if attack == "pgd":
            key = jax.random.fold_in(jax.random.key(rc.seed), start)
            x = attacks.pgd(entry.fn, entry.params, x, y, key, eps, rc.step_size * eps / rc.steps,
                            norm=norm, steps=rc.steps, restarts=rc.restarts)
        elif attack == "fgsm":
            x = attacks.fgsm(entry.fn, entry.params, x, y, eps, norm=norm)
        correct += int(jnp.sum(jnp.argmax(entry.fn(entry.params, x), -1) == y))
    return correct / len(images)


def _accuracies(entry: Entry, clean, labels, rc) -> dict[str, float]:
    """{column: accuracy}: clean, PGD at every budget, FGSM; printed as they come."""
    accs = {"clean": _accuracy(entry, clean, labels, rc)}
    for norm, budget, eps in _budgets(rc):
        accs[_column(norm, budget)] = _accuracy(entry, clean, labels, rc, "pgd", norm, eps)
    if rc.fgsm_linf:
        accs[f"FGSM {_column('linf', rc.fgsm_linf)}"] = _accuracy(
            entry, clean, labels, rc, "fgsm", "linf", rc.fgsm_linf / 255.0)
    print(f"robustness: {entry.label}: " + ", ".join(f"{k} {100 * v:.1f}%"
                                                     for k, v in accs.items()), flush=True)
    return accs


def _budgets(rc) -> list[tuple[str, float, float]]:
    """(norm, budget as written, eps on the [0, 1] scale)."""
    return ([("linf", b, b / 255.0) for b in rc.linf] + [("l2", b, float(b)) for b in rc.l2])


def _column(norm: str, budget: float) -> str:
    return f"{'L∞' if norm == 'linf' else 'L2'} {budget:g}{NORM_UNITS[norm]}"


def _table(results: dict, rc) -> str:
    columns = ["clean"] + [_column(n, b) for n, b, _ in _budgets(rc)]
    columns += [f"FGSM {_column('linf', rc.fgsm_linf)}"] if rc.fgsm_linf else []
    lines = ["| classifier | " + " | ".join(columns) + " |",
             "|---" * (len(columns) + 1) + "|"]
    for label, accs in results.items():
        lines.append(f"| {label} | " + " | ".join(f"{100 * accs[c]:.1f}%" for c in columns) + " |")
    return "\n".join(lines)


def _plot(results: dict, rc, path: str) -> None:
    fig, axes = subplots(1, 2, figsize=(10, 3.8))
    for ax, norm, grid in ((axes[0], "linf", rc.linf), (axes[1], "l2", rc.l2)):
        for label, accs in results.items():
            ax.plot([0, *grid], [100 * accs["clean"]] + [100 * accs[_column(norm, b)] for b in grid],
                    marker="o", label=label)
        ax.set_xlabel(f"{'L∞ budget (/255)' if norm == 'linf' else 'L2 budget'}")
        ax.set_ylabel(f"accuracy under PGD-{rc.steps} (%)")
        ax.set_ylim(0, 100)
        ax.grid(alpha=0.3)
    axes[1].legend(fontsize=7, loc="upper right")
    save_figure(fig, path)


def adversarial_gradient_identity(log_joint_at: Callable, y, labels, sigma):
    """(grad_y log p(c|y), (D(y, c) - D(y)) / sigma^2) for ``log_joint_at(y) -> f(y)`` at
    noise level ``sigma`` (scalar). The first by ``jax.grad`` of the log-softmax, the second
    from two Tweedie denoisers (``jaxden.tweedie``); equal by Tweedie's formula."""

    def log_posterior(y):
        log_probs = tweedie.classify(log_joint_at, y)
        return jnp.sum(jnp.take_along_axis(log_probs, labels[:, None], -1))

    direct = jax.grad(log_posterior)(y)
    difference = (tweedie.denoise(log_joint_at, y, sigma, labels)
                  - tweedie.denoise(log_joint_at, y, sigma)) / sigma**2
    return direct, difference


def _relative_errors(a, b) -> np.ndarray:
    return np.asarray(attacks.l2_norms(a - b) / jnp.maximum(attacks.l2_norms(a), 1e-30))


def _identity_figure(workdir, model, config, rc, clean, labels, out_dir) -> tuple[str, dict]:
    """The identity on real test images at ``rc.identity_sigma``, in float32 and float64;
    a figure of both sides; returns a markdown line and the relative errors."""
    graphdef, state = nnx.split(model)
    log_joint = _cdn_log_joint(graphdef, config)
    sigma = rc.identity_sigma / 255.0
    n = rc.identity_images
    y = fixed_noisy(clean[:n], rc.identity_sigma, rc.seed)
    both_sides = jax.jit(lambda s, y, c: adversarial_gradient_identity(
        log_joint(s, sigma), y, c, sigma))
    direct, difference = both_sides(state, y, labels[:n])
    errors32 = _relative_errors(direct, difference)
    with jax.enable_x64():
        state64 = jax.tree.map(lambda p: jnp.asarray(p, jnp.float64), state)
        errors64 = _relative_errors(*both_sides(state64, jnp.asarray(y, jnp.float64), labels[:n]))
    if jax.process_index() == 0:
        fig, axes = subplots(n, 4, figsize=(9, 2.3 * n), squeeze=False)
        for i in range(n):
            scale = float(jnp.max(jnp.abs(direct[i]))) or 1.0
            panels = [(y[i], f"noisy y, σ={rc.identity_sigma:g}", "gray", 0, 1),
                      (direct[i], "∇y log p(c|y)", "RdBu", -scale, scale),
                      (difference[i], "(D(y,c) − D(y)) / σ²", "RdBu", -scale, scale),
                      (direct[i] - difference[i], f"difference (rel. {errors32[i]:.1e})", "RdBu",
                       -scale, scale)]
            for ax, (img, title, cmap, lo, hi) in zip(axes[i], panels):
                ax.imshow(np.asarray(img)[..., 0], cmap=cmap, vmin=lo, vmax=hi)
                ax.set_title(title, fontsize=8)
                ax.axis("off")
        save_figure(fig, os.path.join(out_dir, "adversarial_gradients.png"))
    markdown = (f"Adversarial gradient identity, grad_y log p(c|y) = (D(y, c) - D(y)) / σ², "
                f"on {n} test images at σ={rc.identity_sigma:g} with the true class "
                f"({os.path.basename(workdir)}): relative L2 error max {errors32.max():.2e} "
                f"(float32), {errors64.max():.2e} (float64). Figure: adversarial_gradients.png.")
    return markdown, {"workdir": workdir, "float32": errors32.tolist(),
                      "float64": errors64.tolist()}


def evaluate_robustness(workdir: str, rc: ml_collections.ConfigDict) -> str:
    """Robust accuracy of the run in ``workdir`` and of ``rc.baselines`` (module docstring);
    writes ``workdir/eval/robustness/``; returns the markdown."""
    with jax.set_mesh(mesh_lib.data_mesh()):  # restored params carry the mesh in their types
        return _evaluate(workdir, rc)


def _evaluate(workdir: str, rc: ml_collections.ConfigDict) -> str:
    workdirs = [workdir] + [w for w in rc.baselines.split(",") if w.strip()]
    entries, configs, models = [], {}, {}
    for w in workdirs:
        models[w], configs[w] = restore(os.path.abspath(w.strip()))
        try:
            entries += classifiers(models[w], configs[w], rc)
        except ValueError as e:
            raise ValueError(f"{w}: {e}") from None
    config = configs[workdir]
    for w, c in configs.items():
        if (c.data.dataset, c.data.grayscale) != (config.data.dataset, config.data.grayscale):
            raise ValueError(f"{w} was trained on {c.data.dataset} (grayscale="
                             f"{c.data.grayscale}), {workdir} on {config.data.dataset}: "
                             f"robust accuracies must be measured on the same test images")
    if not entries:
        raise ValueError("none of the runs classifies; robustness needs a 'cdn' run with "
                         "ce_weight > 0 or a multitask run with the classify task")
    test = load_split(config, "test", max_examples=rc.max_examples)
    clean, labels = jnp.asarray(test.images), jnp.asarray(test.labels)
    results = {entry.label: _accuracies(entry, clean, labels, rc) for entry in entries}
    out_dir = rc.out_dir or os.path.join(workdir, "eval", "robustness")
    if jax.process_index() == 0:
        _plot(results, rc, os.path.join(out_dir, "accuracy.png"))
    lines = [f"# Robust accuracy: {test.name}, first {len(clean)} test images",
             "", f"Untargeted white-box PGD-{rc.steps} ({rc.restarts} restart(s), random start, "
             f"step {rc.step_size:g}·ε/{rc.steps}) for each budget, FGSM beside; images in "
             f"[0, 1]. Energy classifiers told σ={rc.sigma:g}.", "",
             _table(results, rc), ""]
    identity = None
    cdn_runs = [w for w in workdirs if configs[w].method == "cdn"]
    if cdn_runs and rc.identity_images:
        line, identity = _identity_figure(os.path.abspath(cdn_runs[0]), models[cdn_runs[0]],
                                          configs[cdn_runs[0]],
                                          rc, clean, labels, out_dir)
        lines += [line, ""]
    markdown = "\n".join(lines)
    save_markdown_and_json(out_dir, markdown, {"workdirs": workdirs, "config": rc.to_dict(),
                                               "accuracy": results, "identity": identity})
    return markdown
