"""Evaluation of a multi-task (or single-task / classifier-only) AddUNet run.

Per noise level sigma in ``config.eval.sigmas`` (0-255 scale; 0 is the clean input), on the
test split with noise fixed by ``config.eval.seed``: mean PSNR and SSIM of the denoised
images (clipped to [0, 1], per image, then averaged) and accuracy on the noisy inputs. For
models with skip gates, the learned gates by level (a table and ``gates.png``), and
inference-time gate modulation (arXiv 2602.12649: "the learned gates offer an inference-time
mechanism to modulate fusion"): each level's gate scaled by each of
``config.eval.modulation_scales`` in turn, with PSNR and accuracy at ``modulation_sigma``.
Writes ``results.md``, ``results.json``, ``gates.png`` and ``grid.png`` in ``WORKDIR/eval``.
"""

import os
import sys

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxden import evaluate, metrics
from jaxden.methods.labelled import fixed_noisy, load_test, noisy_input_scores
from jaxden.methods.multitask import predict_fn, tasks

_psnr, _ssim = metrics.psnr_jit, metrics.ssim_jit


def row_label(config) -> str:
    """A short name of the run's comparison row, e.g. "MTL gated" or "classifier-only"."""
    m, t = config.model, tasks(config)
    kind = "MTL" if len(t) == 2 else "single-task" if t == ("denoise",) else "classifier-only"
    parts = [kind] if kind == "classifier-only" else [kind, m.skip]
    if "classify" in t:
        if not tuple(m.head_hidden):
            parts.append("linear probe")
        if m.head_tap == "decoder":
            parts.append("decoder tap")
    return " ".join(parts[:2]) + "".join(f", {p}" for p in parts[2:])


def has_gates(model) -> bool:
    unet = model.unet
    return unet.has_decoder and unet.skip in ("gated", "add")


def _scores(run, clean, labels, noisy, batch_size, gate_scale=None, with_ssim=True):
    """{"psnr", "ssim", "acc"} over the examples (None for what the model does not do)."""
    psnr, ssim, correct = [], [], []
    for i in range(0, len(clean), batch_size):
        x, y = clean[i:i + batch_size], noisy[i:i + batch_size]
        denoised, logits = run(y, gate_scale)
        if denoised is not None:
            denoised = jnp.clip(denoised, 0.0, 1.0)
            psnr.append(_psnr(denoised, x))
            if with_ssim:
                ssim.append(_ssim(denoised, x))
        if logits is not None:
            correct.append(jnp.argmax(logits, -1) == labels[i:i + batch_size])

    def mean(parts):
        return float(jnp.mean(jnp.concatenate(parts))) if parts else None

    return {"psnr": mean(psnr), "ssim": mean(ssim), "acc": mean(correct)}


def gate_table(gates_by_run: dict[str, list[float]]) -> str:
    """Markdown: one row per run, the effective gate of each level (level 0 is shallowest)."""
    levels = max(len(g) for g in gates_by_run.values())
    lines = ["| run | " + " | ".join(f"level {i}" for i in range(levels)) + " |",
             "|---|" + "---|" * levels]
    lines += [f"| {name} | " + " | ".join(f"{v:.3f}" for v in g) + " |"
              for name, g in gates_by_run.items()]
    return "\n".join(lines)


def modulation_table(modulation: dict, sigma: int) -> str:
    lines = [f"| gate scale (σ={sigma}) | PSNR | SSIM | accuracy |", "|---|---|---|---|"]
    for name, s in modulation.items():
        cells = (evaluate.format_score(s[k], k) for k in ("psnr", "ssim", "acc"))
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _gate_modulation(run, model, ev, clean, labels, with_ssim):
    n = ev.modulation_examples
    clean, labels = clean[:n], labels[:n]
    noisy = fixed_noisy(clean, ev.modulation_sigma, ev.seed)
    levels = model.unet.levels
    out = {"all gates x1": _scores(run, clean, labels, noisy, ev.batch_size, None, with_ssim)}
    for level in range(levels):
        for scale in ev.modulation_scales:
            gate_scale = jnp.ones((levels,)).at[level].set(scale)
            out[f"level {level} x{scale:g}"] = _scores(run, clean, labels, noisy, ev.batch_size,
                                                       gate_scale, with_ssim)
    return out


def save_gate_plot(path: str, gates_by_run: dict[str, list[float]], title: str) -> None:
    """Bar chart of the effective gate by level, one bar group per level, one bar per run;
    written by process 0 only."""
    if jax.process_index() != 0:
        return
    levels = max(len(g) for g in gates_by_run.values())
    width = 0.8 / len(gates_by_run)
    fig, ax = evaluate.subplots(figsize=(3.6 + 1.4 * levels, 3.2))
    for i, (name, g) in enumerate(gates_by_run.items()):
        ax.bar(np.arange(len(g)) + (i - (len(gates_by_run) - 1) / 2) * width, g, width,
               label=name)
    ax.set_xticks(range(levels), [f"level {i}" + (" (shallowest)" if i == 0 else "")
                                  for i in range(levels)], fontsize=8)
    ax.set_ylabel("effective gate softplus(β)")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    evaluate.save_figure(fig, path)


def _grid(run, clean, labels, ev, class_names):
    noisy = fixed_noisy(clean, ev.modulation_sigma, ev.seed)
    denoised, logits = run(noisy, None)
    rows = []
    for i in range(len(clean)):
        panels = [(f"clean ({class_names[labels[i]]})", np.asarray(clean[i])),
                  (f"noisy σ={ev.modulation_sigma}", np.asarray(noisy[i]))]
        if denoised is not None:
            panels.append(("denoised", np.asarray(denoised[i])))
        if logits is not None:
            panels[-1] = (panels[-1][0] + f" → {class_names[int(jnp.argmax(logits[i]))]}",
                          panels[-1][1])
        rows.append((f"#{i}", panels))
    return rows


def evaluate_multitask(model, config, workdir: str, step: int) -> str:
    """Evaluate on the test split; write ``workdir/eval/``; return the markdown."""
    ev = config.eval
    test, clean, labels, with_ssim = load_test(config)
    run, label = predict_fn(model), row_label(config)
    scores, noisy_scores = {}, {}
    for sigma in ev.sigmas:
        noisy = fixed_noisy(clean, sigma, ev.seed)
        scores[str(sigma)] = _scores(run, clean, labels, noisy, ev.batch_size, None, with_ssim)
        noisy_scores[str(sigma)] = noisy_input_scores(clean, noisy, sigma, with_ssim)

    outdir = os.path.join(workdir, "eval")
    parts = [
        f"# Multi-task results: {label}, checkpoint step {step}",
        "",
        f"- Data: `{test.name}`, {len(test)} images {clean.shape[1]}x{clean.shape[2]}x"
        f"{clean.shape[3]}; noise fixed by eval seed {ev.seed}; training seed {config.seed}.",
        "- The noisy input at σ=0 is the clean image (PSNR ∞, shown as —). "
        "PSNR per image (data_range 1, outputs clipped to [0,1]) then averaged; SSIM as "
        "scikit-image (Gaussian window 11, σ=1.5)"
        + ("" if with_ssim else ", not computed: the images are smaller than 11x11")
        + "; accuracy of the head on the noisy input.",
        f"- Training: {', '.join(tasks(config))}; L = L_den + {config.cls_weight} · L_cls "
        f"(when both); {config.total_steps} steps of batch {config.batch_size}.",
        f"- Command: `python {' '.join(sys.argv)}`",
        "",
        evaluate.score_table({"noisy input": noisy_scores, label: scores}, ev.sigmas),
        "",
    ]
    payload = {"step": step, "label": label, "row": config.get("row"), "seed": config.seed,
               "tasks": list(tasks(config)), "sigmas": list(ev.sigmas), "scores": scores,
               "noisy_input": noisy_scores, "num_examples": len(test),
               "params": sum(x.size for x in jax.tree.leaves(nnx.state(model, nnx.Param)))}
    if has_gates(model):
        gates = np.asarray(model.gates()).reshape(model.unet.levels, -1).mean(-1).tolist()
        payload["gates"] = gates
        modulation = _gate_modulation(run, model, ev, clean, labels, with_ssim)
        payload["modulation"] = modulation
        save_gate_plot(os.path.join(outdir, "gates.png"), {label: gates},
                       f"learned skip gates, {label}, step {step}")
        parts += ["Learned gates by level (0 = shallowest, full resolution; mean over channels "
                  "for per-channel gates):", "", gate_table({label: gates}), "",
                  f"Gate modulation at inference ({min(len(test), ev.modulation_examples)} "
                  "test images; one level's gate scaled, the others kept):", "",
                  modulation_table(modulation, ev.modulation_sigma), ""]
    if ev.grid_images:
        evaluate.save_grid(os.path.join(outdir, "grid.png"),
                           _grid(run, clean[:ev.grid_images], np.asarray(labels), ev,
                                 test.class_names))
    markdown = "\n".join(parts)
    evaluate.save_markdown_and_json(outdir, markdown, {**payload, "config": config.to_dict()})
    return markdown
