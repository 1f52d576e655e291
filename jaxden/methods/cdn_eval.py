"""Evaluation of a classification-denoising network (Thiry & Guth, arXiv 2410.03505).

Per noise level sigma in ``config.eval.sigmas`` (0-255; 0 is the clean input), on the test
split with noise fixed by ``config.eval.seed``: accuracy of softmax f(y); PSNR and SSIM of the
marginal denoiser D(y), of the class-conditional D(y, c) given the true class, and of
D(y, c_hat) given the predicted class. At sigma = 0, D(y) = y exactly (PSNR infinite, shown
as —). Writes ``results.md``, ``results.json`` and ``grid.png`` in ``WORKDIR/eval``; the JSON
has the layout ``python -m jaxden.compare`` reads.
"""

import os
import sys

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxden import evaluate, metrics
from jaxden.methods.cdn import denoiser_fn
from jaxden.methods.labelled import fixed_noisy, load_test, noisy_input_scores

_psnr, _ssim = metrics.psnr_jit, metrics.ssim_jit
DENOISERS = ("D(y)", "D(y, true c)", "D(y, predicted c)")


def trained_tasks(config) -> tuple[str, ...]:
    """The tasks with a positive weight in the loss: "denoise" (DSM) and/or "classify" (CE)."""
    lc = config.loss
    return tuple(task for task, on in (
        ("denoise", lc.dsm_weight > 0 or lc.conditional_dsm_weight > 0),
        ("classify", lc.ce_weight > 0)) if on)


def row_label(config) -> str:
    """"CDN joint", "CDN classifier-only" or "CDN denoiser-only", from the loss weights."""
    tasks = trained_tasks(config)
    return ("CDN joint" if len(tasks) == 2 else
            "CDN denoiser-only" if tasks == ("denoise",) else "CDN classifier-only")


def _image_scores(outputs, clean, with_ssim):
    """Mean PSNR / SSIM of the concatenated denoiser outputs, clipped to [0, 1]."""
    if not outputs:
        return {"psnr": None, "ssim": None, "acc": None}
    out = jnp.clip(jnp.concatenate(outputs), 0.0, 1.0)
    return {"psnr": float(jnp.mean(_psnr(out, clean))),
            "ssim": float(jnp.mean(_ssim(out, clean))) if with_ssim else None, "acc": None}


def scores_at(run, clean, labels, sigma, config, with_ssim):
    """({denoiser name: {"psnr", "ssim", "acc"}}, noisy-input scores) at one noise level
    (0-255); accuracy only for a model trained to classify."""
    ev = config.eval
    noisy = fixed_noisy(clean, sigma, ev.seed)
    outputs, correct = {name: [] for name in DENOISERS}, []
    for i in range(0, len(clean), ev.batch_size):
        y, c = noisy[i:i + ev.batch_size], labels[i:i + ev.batch_size]
        s = jnp.full(len(y), sigma / 255.0)
        denoised, log_probs = run(y, s)
        predicted = jnp.argmax(log_probs, -1)
        correct.append(predicted == c)
        if sigma > 0:
            outputs["D(y)"].append(denoised)
            outputs["D(y, true c)"].append(run(y, s, c)[0])
            outputs["D(y, predicted c)"].append(run(y, s, predicted)[0])
    scores = {name: _image_scores(outs, clean, with_ssim) for name, outs in outputs.items()}
    if "classify" in trained_tasks(config):
        scores["D(y)"]["acc"] = float(jnp.mean(jnp.concatenate(correct)))
    noisy_scores = noisy_input_scores(clean, noisy, sigma, with_ssim)
    return scores, noisy_scores


def _grid(run, clean, labels, sigma, seed, class_names):
    noisy = fixed_noisy(clean, sigma, seed)
    s = jnp.full(len(clean), sigma / 255.0)
    denoised, log_probs = run(noisy, s)
    conditional = run(noisy, s, labels)[0]
    rows = []
    for i in range(len(clean)):
        guess = class_names[int(jnp.argmax(log_probs[i]))]
        rows.append((f"#{i}", [
            (f"clean ({class_names[int(labels[i])]})", np.asarray(clean[i])),
            (f"noisy σ={sigma}", np.asarray(noisy[i])),
            (f"D(y) → {guess}", np.asarray(denoised[i])),
            ("D(y, true c)", np.asarray(conditional[i]))]))
    return rows


def evaluate_cdn(model, config, workdir: str, step: int) -> str:
    """Evaluate on the test split; write ``workdir/eval/``; return the markdown."""
    ev = config.eval
    test, clean, labels, with_ssim = load_test(config)
    run, label = denoiser_fn(model, config), row_label(config)
    by_sigma, noisy_input = {}, {}
    for sigma in ev.sigmas:
        by_sigma[str(sigma)], noisy_input[str(sigma)] = scores_at(run, clean, labels, sigma,
                                                                  config, with_ssim)
    rows = {"noisy input": noisy_input}
    rows.update({name: {s: v[name] for s, v in by_sigma.items()} for name in DENOISERS})
    lc = config.loss
    parts = [
        f"# Classification-denoising results: {label}, checkpoint step {step}",
        "",
        f"- Data: `{test.name}`, {len(test)} images {clean.shape[1]}x{clean.shape[2]}x"
        f"{clean.shape[3]}; noise fixed by eval seed {ev.seed}; training seed {config.seed}.",
        "- Accuracy: argmax of f(y) on the noisy input. PSNR per image (data_range 1, outputs "
        "clipped to [0,1]) then averaged; SSIM as scikit-image (Gaussian window 11, σ=1.5)"
        + ("" if with_ssim else ", not computed: images smaller than 11x11")
        + ". At σ=0 every D(y) is y (PSNR ∞, shown as —).",
        f"- Training: L = {lc.ce_weight} CE + {lc.dsm_weight} DSM + "
        f"{lc.conditional_dsm_weight} conditional DSM ({lc.dsm_weighting} weighting), σ "
        f"log-uniform in [{config.noise.sigma_min}, {config.noise.sigma_max}]; "
        f"{config.total_steps} steps of batch {config.batch_size}.",
        f"- Command: `python {' '.join(sys.argv)}`",
        "",
        evaluate.score_table(rows, ev.sigmas),
        "",
    ]
    outdir = os.path.join(workdir, "eval")
    if ev.grid_images:
        evaluate.save_grid(os.path.join(outdir, "grid.png"),
                           _grid(run, clean[:ev.grid_images], labels[:ev.grid_images],
                                 ev.grid_sigma, ev.seed, test.class_names))
    markdown = "\n".join(parts)
    payload = {"step": step, "label": label, "row": config.get("row"), "seed": config.seed,
               "tasks": list(trained_tasks(config)), "sigmas": list(ev.sigmas),
               "scores": {s: v["D(y)"] for s, v in by_sigma.items()},
               "conditional_true": {s: v["D(y, true c)"] for s, v in by_sigma.items()},
               "conditional_predicted": {s: v["D(y, predicted c)"] for s, v in by_sigma.items()},
               "noisy_input": noisy_input, "num_examples": len(test),
               "params": sum(x.size for x in jax.tree.leaves(nnx.state(model, nnx.Param))),
               "config": config.to_dict()}
    evaluate.save_markdown_and_json(outdir, markdown, payload)
    return markdown
